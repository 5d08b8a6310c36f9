// External condition embeddings: a table name -> vector, e.g. ESM2 vectors of the perturbed genes,
// that priors project into their conditioning instead of learning a label table.
//
// Read from the formats users have them in, chosen by extension:
//   .csv / .tsv     name, v1, v2, ... per line (an optional header line is skipped)
//   .safetensors    a [n, dim] tensor `embeddings` with metadata "names" (a JSON list), or one 1-D
//                   tensor per name
//   .h5ad           rows of X (obs_names are the names), or of obsm[key] when a key is given
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace latentcell::data {

class EmbeddingTable {
 public:
  EmbeddingTable(std::vector<std::string> names, at::Tensor vectors, std::string source);

  int64_t size() const { return static_cast<int64_t>(names_.size()); }
  int64_t dim() const { return vectors_.size(1); }
  const std::vector<std::string>& names() const { return names_; }
  const at::Tensor& vectors() const { return vectors_; }  // [n, dim] float32
  std::optional<int64_t> find(const std::string& name) const;
  // Rows for `names` ([names.size(), dim]); names absent from the table are an error listing them,
  // unless `missing` is given, which then marks them (1 = absent, row left zero).
  at::Tensor lookup(const std::vector<std::string>& names, std::vector<uint8_t>* missing = nullptr) const;

 private:
  std::vector<std::string> names_;
  at::Tensor vectors_;
  std::string source_;
  std::unordered_map<std::string, int64_t> index_;
};

// `key`: the safetensors tensor name (default "embeddings") or the h5ad obsm key (default: X).
EmbeddingTable loadEmbeddingTable(const std::string& path, const std::string& key = "");

}  // namespace latentcell::data
