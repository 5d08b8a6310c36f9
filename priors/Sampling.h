// Random draws shared by the priors: uniform and normal tensors from an optional generator, and
// categorical sampling from logits with temperature and top-k.
//
// Training draws from the default generator of the target device (the trainer seeds it and saves
// its state for exact resume); sampling passes its own generator, which may live on the CPU while
// the model runs on a GPU. Draws then happen on the generator's device and are moved, so one
// seed gives the same samples on every device.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <optional>

namespace latentcell::priors {

// U[0, 1) and N(0, 1) float32 tensors of `shape` on `device`.
at::Tensor uniform(c10::IntArrayRef shape, const c10::Device& device, std::optional<at::Generator> gen);
at::Tensor normal(c10::IntArrayRef shape, const c10::Device& device, std::optional<at::Generator> gen);

// Draws one index per row of logits [..., classes] -> [...] int64 from softmax(logits / temperature)
// restricted to the top_k largest logits (top_k <= 0: all). temperature == 0 is greedy (argmax).
at::Tensor sampleCategorical(const at::Tensor& logits, double temperature, int64_t top_k, at::Generator& gen);

}  // namespace latentcell::priors
