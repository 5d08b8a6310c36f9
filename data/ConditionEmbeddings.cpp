// External condition embeddings (see ConditionEmbeddings.h).
#include "data/ConditionEmbeddings.h"

#include "core/Safetensors.h"
#include "data/H5ad.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace latentcell::data {
namespace {

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool parseNumber(const std::string& field, float& out) {
  const char* begin = field.c_str();
  char* end = nullptr;
  errno = 0;
  out = std::strtof(begin, &end);
  while (end && (*end == ' ' || *end == '\r')) ++end;
  return end != begin && end && *end == '\0' && errno == 0;
}

EmbeddingTable loadDelimited(const std::string& path, char sep) {
  std::ifstream in(path);
  std::vector<std::string> names;
  std::vector<float> values;
  int64_t dim = -1;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty() || line == "\r") continue;
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, sep);) fields.push_back(f);
    if (fields.size() < 2) {
      throw std::runtime_error(fmt::format("{}:{}: expected a name and at least one value per line", path, line_no));
    }
    std::vector<float> row(fields.size() - 1);
    bool numeric = true;
    for (size_t j = 1; j < fields.size(); ++j) numeric = numeric && parseNumber(fields[j], row[j - 1]);
    if (!numeric) {
      if (names.empty() && dim < 0) {  // a header line
        dim = static_cast<int64_t>(row.size());
        continue;
      }
      throw std::runtime_error(fmt::format("{}:{}: a value is not a number", path, line_no));
    }
    if (dim >= 0 && static_cast<int64_t>(row.size()) != dim) {
      throw std::runtime_error(fmt::format("{}:{}: {} values where earlier lines have {}", path, line_no,
                                           row.size(), dim));
    }
    dim = static_cast<int64_t>(row.size());
    names.push_back(fields[0]);
    values.insert(values.end(), row.begin(), row.end());
  }
  if (names.empty()) throw std::runtime_error(fmt::format("{}: no embeddings found", path));
  auto vectors = at::from_blob(values.data(), {static_cast<int64_t>(names.size()), dim}, at::kFloat).clone();
  return EmbeddingTable(std::move(names), vectors, path);
}

EmbeddingTable loadSafetensorsTable(const std::string& path, const std::string& key) {
  const auto file = core::loadSafetensors(path);
  const std::string tensor = key.empty() ? "embeddings" : key;
  if (file.contains(tensor)) {
    const auto it = file.metadata.find("names");
    if (it == file.metadata.end()) {
      throw std::runtime_error(fmt::format("{}: tensor '{}' needs a metadata entry 'names' (a JSON list of row names)",
                                           path, tensor));
    }
    auto parsed = nlohmann::json::parse(it->second, nullptr, false);
    if (!parsed.is_array()) throw std::runtime_error(fmt::format("{}: metadata 'names' is not a JSON list", path));
    std::vector<std::string> names;
    for (const auto& n : parsed) {
      if (!n.is_string()) throw std::runtime_error(fmt::format("{}: metadata 'names' must hold strings", path));
      names.push_back(n.get<std::string>());
    }
    return EmbeddingTable(std::move(names), file.at(tensor), path);
  }
  if (!key.empty()) throw std::runtime_error(fmt::format("{}: no tensor '{}'", path, key));
  std::vector<std::string> names;
  std::vector<at::Tensor> rows;
  for (const auto& [name, t] : file.tensors) {
    if (t.dim() != 1) {
      throw std::runtime_error(fmt::format("{}: '{}' is not a vector; store one 1-D tensor per name or a [n, dim] "
                                           "tensor 'embeddings' with metadata 'names'", path, name));
    }
    names.push_back(name);
    rows.push_back(t);
  }
  if (rows.empty()) throw std::runtime_error(fmt::format("{}: no embeddings found", path));
  for (const auto& r : rows) {
    if (r.size(0) != rows.front().size(0)) {
      throw std::runtime_error(fmt::format("{}: vectors have different lengths ({} and {})", path,
                                           rows.front().size(0), r.size(0)));
    }
  }
  return EmbeddingTable(std::move(names), at::stack(rows), path);
}

EmbeddingTable loadH5adTable(const std::string& path, const std::string& key) {
  const auto adata = readH5ad(path);
  const int64_t n = adata.n_obs();
  if (!key.empty()) {
    const auto it = adata.obsm.find(key);
    if (it == adata.obsm.end()) throw std::runtime_error(fmt::format("{}: no dense obsm entry '{}'", path, key));
    const auto& m = it->second;
    auto vectors = at::from_blob(const_cast<float*>(m.values.data()), {m.rows, m.cols}, at::kFloat).clone();
    return EmbeddingTable(adata.obs.index, vectors, path);
  }
  auto vectors = at::zeros({n, adata.n_vars()}, at::kFloat);  // X densified: tables are small
  auto* out = vectors.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t k = adata.X.indptr[r]; k < adata.X.indptr[r + 1]; ++k) out[r * adata.n_vars() + adata.X.indices[k]] = adata.X.data[k];
  }
  return EmbeddingTable(adata.obs.index, vectors, path);
}

}  // namespace

EmbeddingTable::EmbeddingTable(std::vector<std::string> names, at::Tensor vectors, std::string source)
    : names_(std::move(names)), vectors_(vectors.to(at::kFloat).contiguous()), source_(std::move(source)) {
  if (vectors_.dim() != 2 || vectors_.size(0) != static_cast<int64_t>(names_.size())) {
    throw std::runtime_error(fmt::format("{}: {} names for a [{}] embedding matrix", source_, names_.size(),
                                         fmt::join(vectors_.sizes(), ", ")));
  }
  if (!at::isfinite(vectors_).all().item<bool>()) {
    throw std::runtime_error(fmt::format("{}: embeddings hold NaN or infinite values", source_));
  }
  for (int64_t i = 0; i < size(); ++i) {
    if (!index_.emplace(names_[i], i).second) {
      throw std::runtime_error(fmt::format("{}: name '{}' appears more than once", source_, names_[i]));
    }
  }
}

std::optional<int64_t> EmbeddingTable::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? std::nullopt : std::optional<int64_t>(it->second);
}

at::Tensor EmbeddingTable::lookup(const std::vector<std::string>& names, std::vector<uint8_t>* missing) const {
  auto out = at::zeros({static_cast<int64_t>(names.size()), dim()}, at::kFloat);  // [names, dim]
  std::vector<std::string> absent;
  if (missing) missing->assign(names.size(), 0);
  for (size_t i = 0; i < names.size(); ++i) {
    if (const auto row = find(names[i])) {
      out[static_cast<int64_t>(i)].copy_(vectors_[*row]);
    } else if (missing) {
      (*missing)[i] = 1;
    } else {
      absent.push_back(names[i]);
    }
  }
  if (!absent.empty()) {
    const size_t shown = std::min<size_t>(absent.size(), 5);
    throw std::runtime_error(fmt::format("{}: no embedding for {} name(s): {}{}; add them to the file or use a "
                                         "learned table for these conditions",
                                         source_, absent.size(),
                                         fmt::join(absent.begin(), absent.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
                                         absent.size() > shown ? ", ..." : ""));
  }
  return out;
}

EmbeddingTable loadEmbeddingTable(const std::string& path, const std::string& key) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error(fmt::format("{}: embedding file does not exist; check the path", path));
  }
  if (endsWith(path, ".csv")) return loadDelimited(path, ',');
  if (endsWith(path, ".tsv")) return loadDelimited(path, '\t');
  if (endsWith(path, ".safetensors")) return loadSafetensorsTable(path, key);
  if (endsWith(path, ".h5ad")) return loadH5adTable(path, key);
  throw std::runtime_error(fmt::format("{}: unknown embedding file type; use .csv, .tsv, .safetensors or .h5ad", path));
}

}  // namespace latentcell::data
