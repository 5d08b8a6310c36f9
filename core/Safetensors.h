// Safetensors reading and writing: the checkpoint format shared with the Python reference code.
//
// Format: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON naming every tensor
// (dtype, shape, data_offsets) plus optional string->string "__metadata__", then the raw
// little-endian C-order bytes. We implement it directly (header parsed with nlohmann::json)
// rather than through torch::save, because torch's C++ archives are not readable by
// safetensors.torch and the format is small enough to validate completely: a corrupt or
// truncated checkpoint must fail loudly at load time with a message naming the file, never
// produce silently wrong weights.
//
// This header stays narrow (no <torch/torch.h>) so that IO-only code does not pay for the nn API.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::core {

// The named tensors in a file's data order. A vector rather than a map because the order is
// meaningful to callers that write the tensors back out, and the state dict APIs take the same
// shape.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct SafetensorsData {
  NamedTensors tensors;                          // CPU tensors that own their memory
  std::map<std::string, std::string> metadata;  // the header's "__metadata__", if any
  std::string source;                            // the file they came from, for error messages

  // The tensor called `name`; throws std::runtime_error naming the tensor and `source`.
  const at::Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
};

// Writes `tensors` (any device, any layout of strides; copied to CPU contiguous) and `metadata`
// to `path`. The write goes to `path + ".tmp"`, is fsynced and then renamed over `path`, so a
// crash never leaves a half-written checkpoint under the real name. Throws std::runtime_error
// on duplicate or reserved names, undefined or non-strided tensors, unsupported dtypes and IO
// failures. Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
void saveSafetensors(const std::string& path, const NamedTensors& tensors,
                     const std::map<std::string, std::string>& metadata = {});

// Reads and fully validates `path`; tensors are returned in the order of their data in the file.
// Every problem (missing file, truncation, bad JSON, unknown dtype, offsets that disagree with
// the shape, overlap, gaps, non-string metadata) is a std::runtime_error with a one-line
// message that names the file.
SafetensorsData loadSafetensors(const std::string& path);

}  // namespace latentcell::core
