// Opening and reading shard directories (see ShardDataset.h).
//
// The index is checked for consistency with itself and with every shard before anything is read:
// shapes, dtypes and dataset ids agree, shard ranges and groups tile the cells, obs codes are in
// range and every cell of a group carries the group's codes, every indptr is monotone and ends at
// its nnz. Row copies then only need to check the gene indices they copy, which they do in a second,
// branch-free pass (ascending from >= 0 to < genes), so corrupt bytes past the checksums give an
// error and never an out-of-range write.
#include "data/ShardDataset.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>

namespace latentcell::data {
namespace {

using nlohmann::json;

// Converts one row's entries to int32/float; returns whether they are ascending and in [0, genes).
template <typename I, typename V>
bool copyEntries(const I* in_idx, const V* in_val, int64_t n, int64_t genes, int32_t* out_idx, float* out_val) {
  for (int64_t k = 0; k < n; ++k) out_idx[k] = static_cast<int32_t>(in_idx[k]);
  for (int64_t k = 0; k < n; ++k) out_val[k] = static_cast<float>(in_val[k]);
  if (n == 0) return true;
  int descending = 0;  // an int reduction, which the vectorizer handles (a bool &= it does not)
  for (int64_t k = 1; k < n; ++k) descending |= out_idx[k] <= out_idx[k - 1];
  return descending == 0 && out_idx[0] >= 0 && out_idx[n - 1] < genes;
}

template <typename T>
T field(const json& j, const char* key) {
  if (!j.contains(key)) throw std::invalid_argument(fmt::format("its metadata has no '{}'", key));
  return j.at(key).get<T>();
}

ShardDtype dtypeFromName(const std::string& name) {
  for (ShardDtype d : {ShardDtype::U16, ShardDtype::U32, ShardDtype::F32})
    if (name == dtypeName(d)) return d;
  throw std::invalid_argument(fmt::format("unknown dtype '{}' in its metadata", name));
}

}  // namespace

std::string shardFileName(int64_t shard) { return fmt::format("shard-{:05d}.lcs", shard); }

ShardDataset::ShardDataset(const std::string& dir, const ShardOpenOptions& options)
    : dir_(dir), index_(dir + "/" + kShardIndexFile, kShardIndexMagic, "shard index", options.verify_checksums) {
  const auto fail = [&](const std::string& what) { index_.fail(what); };
  int64_t n_shards = 0, source_cells = 0, group_count = 0;
  try {
    const auto raw = index_.get<char>("meta", ShardDtype::Bytes);
    const json meta = json::parse(raw.begin(), raw.end());
    if (field<std::string>(meta, "format") != "latentcell-shards") fail("its metadata is not a latentcell shard index");
    cells_ = field<int64_t>(meta, "cells");
    genes_ = field<int64_t>(meta, "genes");
    nnz_ = field<int64_t>(meta, "nnz");
    source_ = field<std::string>(meta, "source");
    source_cells = field<int64_t>(meta, "source_cells");
    value_dtype_ = dtypeFromName(field<std::string>(meta, "values"));
    index_dtype_ = dtypeFromName(field<std::string>(meta, "indices"));
    whole_numbers_ = field<bool>(meta, "whole_numbers");
    var_names_ = field<std::vector<std::string>>(meta, "var_names");
    for (const auto& c : field<json>(meta, "obs"))
      obs_.push_back({field<std::string>(c, "name"), field<std::vector<std::string>>(c, "categories"), {}});
    condition_ = field<std::string>(meta, "condition");
    control_ = field<std::string>(meta, "control");
    context_ = field<std::vector<std::string>>(meta, "context");
    n_shards = field<int64_t>(meta, "shards");
    group_count = field<int64_t>(meta, "groups");
  } catch (const ShardFormatError&) {
    throw;
  } catch (const std::exception& e) {  // JSON syntax and type errors, missing keys
    fail(fmt::format("corrupt metadata: {}", e.what()));
  }
  if (cells_ < 0 || genes_ < 0 || genes_ > INT32_MAX || nnz_ < 0 || source_cells < cells_ || n_shards < 0 ||
      group_count < 0 || (value_dtype_ == ShardDtype::U32) || index_dtype_ == ShardDtype::F32 ||
      (index_dtype_ == ShardDtype::U16 && genes_ > 65536))
    fail(fmt::format("inconsistent metadata: {} cells, {} genes, {} nnz, {} shards, {} groups, values {}, indices {}",
                     cells_, genes_, nnz_, n_shards, group_count, dtypeName(value_dtype_), dtypeName(index_dtype_)));
  if (static_cast<int64_t>(var_names_.size()) != genes_)
    fail(fmt::format("it lists {} var names for {} genes", var_names_.size(), genes_));

  // Per-cell arrays.
  source_rows_ = index_.get<int64_t>("source_row", ShardDtype::I64);
  if (static_cast<int64_t>(source_rows_.size()) != cells_)
    fail(fmt::format("section 'source_row' has {} entries for {} cells", source_rows_.size(), cells_));
  for (int64_t r : source_rows_)
    if (r < 0 || r >= source_cells) fail(fmt::format("a source row {} is outside [0, {})", r, source_cells));
  for (size_t k = 0; k < obs_.size(); ++k) {
    auto& c = obs_[k];
    c.codes = index_.get<int32_t>(fmt::format("obs.{}", k), ShardDtype::I32);
    if (static_cast<int64_t>(c.codes.size()) != cells_)
      fail(fmt::format("obs column '{}' has {} codes for {} cells", c.name, c.codes.size(), cells_));
    const auto n_cat = static_cast<int32_t>(c.categories.size());
    for (int32_t code : c.codes)
      if (code < -1 || code >= n_cat)
        fail(fmt::format("obs column '{}' has code {} outside its {} categories", c.name, code, n_cat));
  }

  // Groups tile [0, cells) in order and every cell carries its group's codes.
  const ShardObsColumn* condition_col = condition_.empty() ? nullptr : &obsColumn(condition_);
  std::vector<const ShardObsColumn*> context_cols;
  for (const auto& c : context_) context_cols.push_back(&obsColumn(c));
  int32_t control_code = -1;
  if (!control_.empty()) {
    if (!condition_col) fail("it names a control label without a condition column");
    const auto& cats = condition_col->categories;
    const auto it = std::find(cats.begin(), cats.end(), control_);
    if (it == cats.end()) fail(fmt::format("control label '{}' is not a category of '{}'", control_, condition_));
    control_code = static_cast<int32_t>(it - cats.begin());
  }
  const auto width = static_cast<int64_t>(3 + context_.size());
  const auto table = index_.get<int64_t>("groups", ShardDtype::I64);
  if (static_cast<int64_t>(table.size()) != group_count * width)
    fail(fmt::format("section 'groups' has {} entries for {} groups of {}", table.size(), group_count, width));
  std::map<std::vector<int32_t>, int64_t> control_of_context;
  int64_t next = 0;
  for (int64_t g = 0; g < group_count; ++g) {
    const int64_t* row = table.data() + g * width;
    CellGroup group;
    group.begin = row[0];
    group.end = row[1];
    if (group.begin != next || group.end <= group.begin || group.end > cells_)
      fail(fmt::format("group {} covers [{}, {}), which does not continue the groups before it at cell {}", g,
                       group.begin, group.end, next));
    next = group.end;
    const auto code = [&](int64_t v, const ShardObsColumn* col) {
      if (v < -1 || v >= static_cast<int64_t>(col ? col->categories.size() : 0))
        fail(fmt::format("group {} has code {} outside the categories", g, v));
      return static_cast<int32_t>(v);
    };
    group.condition = code(row[2], condition_col);  // without a condition column only -1 passes
    for (size_t k = 0; k < context_cols.size(); ++k) group.context.push_back(code(row[3 + k], context_cols[k]));
    for (int64_t cell = group.begin; cell < group.end; ++cell) {
      bool same = !condition_col || condition_col->codes[cell] == group.condition;
      for (size_t k = 0; k < context_cols.size(); ++k) same &= context_cols[k]->codes[cell] == group.context[k];
      if (!same) fail(fmt::format("cell {} does not carry the codes of its group {}", cell, g));
    }
    group.is_control = control_code >= 0 && group.condition == control_code;
    if (group.is_control && !control_of_context.emplace(group.context, g).second)
      fail(fmt::format("group {} repeats the control group of its context", g));
    groups_.push_back(std::move(group));
  }
  if (next != cells_) fail(fmt::format("the groups cover {} of {} cells", next, cells_));
  for (auto& group : groups_)
    if (!group.is_control && control_code >= 0)
      if (const auto it = control_of_context.find(group.context); it != control_of_context.end())
        group.control = it->second;

  // Shards.
  const auto first = index_.get<int64_t>("shard_first", ShardDtype::I64);
  if (static_cast<int64_t>(first.size()) != n_shards + 1 || first.front() != 0 || first.back() != cells_)
    fail(fmt::format("section 'shard_first' does not split {} cells into {} shards", cells_, n_shards));
  shard_first_.assign(first.begin(), first.end());
  int64_t total_nnz = 0;
  for (int64_t s = 0; s < n_shards; ++s) {
    if (first[s + 1] <= first[s]) fail(fmt::format("shard {} would hold no cells", s));
    Shard shard{MappedShardFile(dir + "/" + shardFileName(s), kShardMagic, "shard", options.verify_checksums), first[s],
                first[s + 1] - first[s], {}, nullptr, nullptr};
    const MappedShardFile& f = shard.file;
    if (f.datasetId() != index_.datasetId())
      f.fail(fmt::format("the shard belongs to another conversion (dataset id {:#x}, the index has {:#x}); "
                         "re-run latentcell data convert into an empty directory",
                         f.datasetId(), index_.datasetId()));
    const auto shape = f.get<int64_t>("shape", ShardDtype::I64);
    if (shape.size() != 4 || shape[0] != s || shape[1] != shard.first || shape[2] != shard.cells || shape[3] != genes_)
      f.fail(fmt::format("its shape does not match the index (shard {}, cells [{}, {}), {} genes)", s, shard.first,
                         first[s + 1], genes_));
    shard.indptr = f.get<int64_t>("indptr", ShardDtype::I64);
    if (static_cast<int64_t>(shard.indptr.size()) != shard.cells + 1) f.fail("its indptr does not have cells + 1 entries");
    if (f.dtypeOf("indices") != index_dtype_ || f.dtypeOf("values") != value_dtype_)
      f.fail(fmt::format("its dtypes ({} indices, {} values) differ from the index's ({}, {})",
                         dtypeName(f.dtypeOf("indices")), dtypeName(f.dtypeOf("values")), dtypeName(index_dtype_),
                         dtypeName(value_dtype_)));
    const auto idx_bytes = f.get<uint8_t>("indices", index_dtype_);
    const auto val_bytes = f.get<uint8_t>("values", value_dtype_);
    const auto nnz = static_cast<int64_t>(idx_bytes.size() / dtypeSize(index_dtype_));
    if (static_cast<int64_t>(val_bytes.size() / dtypeSize(value_dtype_)) != nnz)
      f.fail("its indices and values differ in length");
    if (shard.indptr[0] != 0 || shard.indptr[shard.cells] != nnz)
      f.fail(fmt::format("its indptr runs from {} to {}, not from 0 to its {} entries", shard.indptr[0],
                         shard.indptr[shard.cells], nnz));
    for (int64_t r = 0; r < shard.cells; ++r)
      if (shard.indptr[r + 1] < shard.indptr[r] || shard.indptr[r + 1] - shard.indptr[r] > genes_)
        f.fail(fmt::format("its indptr is corrupt at cell {}", shard.first + r));
    shard.indices = idx_bytes.data();
    shard.values = val_bytes.data();
    total_nnz += nnz;
    shards_.push_back(std::move(shard));
  }
  if (total_nnz != nnz_) fail(fmt::format("the shards hold {} entries, the index says {}", total_nnz, nnz_));
}

const ShardObsColumn& ShardDataset::obsColumn(const std::string& name) const {
  std::string names;
  for (const auto& c : obs_) {
    if (c.name == name) return c;
    names += (names.empty() ? "" : ", ") + c.name;
  }
  throw std::invalid_argument(fmt::format("{}: no obs column '{}' is stored (stored: {}); convert again with --obs",
                                          dir_, name, names.empty() ? "none" : names));
}

void ShardDataset::checkCell(int64_t cell) const {
  if (cell < 0 || cell >= cells_)
    throw std::out_of_range(fmt::format("{}: cell {} is outside [0, {})", dir_, cell, cells_));
}

const ShardDataset::Shard& ShardDataset::shardOf(int64_t cell) const {
  const auto it = std::upper_bound(shard_first_.begin(), shard_first_.end(), cell);
  return shards_[static_cast<size_t>(it - shard_first_.begin() - 1)];
}

int64_t ShardDataset::rowNnz(int64_t cell) const {
  checkCell(cell);
  const Shard& s = shardOf(cell);
  const int64_t r = cell - s.first;
  return s.indptr[r + 1] - s.indptr[r];
}

void ShardDataset::badIndex(const Shard& shard, int64_t cell) const {
  shard.file.fail(fmt::format("cell {} has gene indices that are out of range or not ascending: the shard is corrupt "
                              "(open it with checksum verification, or re-run latentcell data convert)",
                              cell));
}

int64_t ShardDataset::copyRow(int64_t cell, int32_t* out_indices, float* out_values) const {
  const Shard& s = shardOf(cell);
  const int64_t r = cell - s.first;
  const int64_t lo = s.indptr[r], n = s.indptr[r + 1] - lo;
  bool ok = false;
  const bool u16_idx = index_dtype_ == ShardDtype::U16;
  switch (value_dtype_) {
    case ShardDtype::U16: {
      const auto* v = static_cast<const uint16_t*>(s.values) + lo;
      ok = u16_idx ? copyEntries(static_cast<const uint16_t*>(s.indices) + lo, v, n, genes_, out_indices, out_values)
                   : copyEntries(static_cast<const uint32_t*>(s.indices) + lo, v, n, genes_, out_indices, out_values);
      break;
    }
    default: {
      const auto* v = static_cast<const float*>(s.values) + lo;
      ok = u16_idx ? copyEntries(static_cast<const uint16_t*>(s.indices) + lo, v, n, genes_, out_indices, out_values)
                   : copyEntries(static_cast<const uint32_t*>(s.indices) + lo, v, n, genes_, out_indices, out_values);
    }
  }
  if (!ok) badIndex(s, cell);
  return n;
}

int64_t ShardDataset::gatherNnz(std::span<const int64_t> cells) const {
  int64_t nnz = 0;
  for (int64_t c : cells) nnz += rowNnz(c);
  return nnz;
}

void ShardDataset::gatherInto(std::span<const int64_t> cells, int64_t* indptr, int32_t* indices, float* values) const {
  indptr[0] = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    checkCell(cells[i]);
    const int64_t at = indptr[i];
    indptr[i + 1] = at + copyRow(cells[i], indices + at, values + at);
  }
}

CsrMatrix ShardDataset::gather(std::span<const int64_t> cells) const {
  CsrMatrix m;
  m.rows = static_cast<int64_t>(cells.size());
  m.cols = genes_;
  const int64_t nnz = gatherNnz(cells);
  m.indptr.resize(cells.size() + 1);
  m.indices.resize(nnz);
  m.data.resize(nnz);
  gatherInto(cells, m.indptr.data(), m.indices.data(), m.data.data());
  return m;
}

CsrMatrix ShardDataset::rows(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > cells_)
    throw std::out_of_range(fmt::format("{}: cells [{}, {}) are outside [0, {})", dir_, begin, end, cells_));
  std::vector<int64_t> cells(end - begin);
  for (int64_t i = 0; i < end - begin; ++i) cells[i] = begin + i;
  return gather(cells);
}

void ShardDataset::gatherDense(std::span<const int64_t> cells, float* out) const {
  std::fill(out, out + static_cast<int64_t>(cells.size()) * genes_, 0.0f);
  std::vector<int32_t> idx(genes_);
  std::vector<float> val(genes_);
  for (size_t i = 0; i < cells.size(); ++i) {
    checkCell(cells[i]);
    const int64_t n = copyRow(cells[i], idx.data(), val.data());
    float* row = out + static_cast<int64_t>(i) * genes_;
    for (int64_t k = 0; k < n; ++k) row[idx[k]] = val[k];
  }
}

}  // namespace latentcell::data
