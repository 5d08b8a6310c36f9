// h5ad -> shard directory (see ShardConvert.h and, for the format, ShardDataset.h).
#include "data/ShardConvert.h"

#include "core/Logging.h"
#include "core/Random.h"
#include "data/H5ad.h"
#include "data/ShardDataset.h"

#include <fmt/format.h>
#include <latentcell/Version.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

namespace latentcell::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Rows of the count matrix, chunk by chunk.
class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual int64_t rows() const = 0;
  virtual int64_t cols() const = 0;
  virtual CsrMatrix read(int64_t begin, int64_t end) = 0;
};

class MemoryRows final : public RowSource {
 public:
  explicit MemoryRows(const CsrMatrix& m) : m_(m) {}
  int64_t rows() const override { return m_.rows; }
  int64_t cols() const override { return m_.cols; }
  CsrMatrix read(int64_t begin, int64_t end) override {
    CsrMatrix out;
    out.rows = end - begin;
    out.cols = m_.cols;
    const int64_t lo = m_.indptr[begin], hi = m_.indptr[end];
    for (int64_t r = begin; r <= end; ++r) out.indptr.push_back(m_.indptr[r] - lo);
    out.indices.assign(m_.indices.begin() + lo, m_.indices.begin() + hi);
    out.data.assign(m_.data.begin() + lo, m_.data.begin() + hi);
    return out;
  }

 private:
  const CsrMatrix& m_;
};

class H5adRows final : public RowSource {
 public:
  H5adRows(const std::string& path, const std::string& matrix) : reader_(path, matrix) {}
  int64_t rows() const override { return reader_.n_obs(); }
  int64_t cols() const override { return reader_.n_vars(); }
  CsrMatrix read(int64_t begin, int64_t end) override { return reader_.readRows(begin, end); }

 private:
  H5adRowReader reader_;
};

// An obs column as categories and codes (-1 = missing). Categorical columns keep their categories;
// any other kind becomes the sorted distinct texts of its values.
struct CodedColumn {
  std::string name;
  std::vector<std::string> categories;
  std::vector<int32_t> codes;
};

bool isMissing(const Column& c, int64_t i) {
  if (!c.missing.empty() && c.missing[i]) return true;
  if (c.kind == Column::Kind::Categorical) return c.codes[i] < 0;
  if (c.kind == Column::Kind::Float) return std::isnan(c.floats[i]);
  return false;
}

CodedColumn codeColumn(const std::string& name, const Column& c) {
  CodedColumn out{name, {}, {}};
  if (c.kind == Column::Kind::Categorical) {
    out.categories = c.categories;
    out.codes = c.codes;
    return out;
  }
  const int64_t n = c.size();
  std::map<std::string, int32_t> ids;
  for (int64_t i = 0; i < n; ++i)
    if (!isMissing(c, i)) ids.emplace(c.text(i), 0);
  for (auto& [text, id] : ids) {
    id = static_cast<int32_t>(out.categories.size());
    out.categories.push_back(text);
  }
  out.codes.resize(n);
  for (int64_t i = 0; i < n; ++i) out.codes[i] = isMissing(c, i) ? -1 : ids.at(c.text(i));
  return out;
}

// The rows where `column` has no value are an error for grouping columns.
void requireValues(const AnnData& a, const CodedColumn& c) {
  for (size_t i = 0; i < c.codes.size(); ++i)
    if (c.codes[i] < 0)
      throw std::invalid_argument(fmt::format(
          "{}: obs column '{}' has no value for cell '{}' (row {}); grouping needs a value in every cell (fill it, "
          "or group by another column)",
          a.source.empty() ? "data" : a.source, c.name, i < a.obs.index.size() ? a.obs.index[i] : "", i));
}

struct Layout {
  std::vector<int64_t> order;    // position -> source row
  std::vector<int64_t> groups;   // rows of [begin, end, condition, context...]
  int64_t group_count = 0;
};

// Groups cells by (context, control first, condition) and shuffles each group with `seed`.
Layout groupCells(const AnnData& a, const std::vector<CodedColumn>& stored, const ShardConvertOptions& o) {
  const auto find = [&](const std::string& name) -> const CodedColumn& {
    for (const auto& c : stored)
      if (c.name == name) return c;
    throw std::logic_error("column " + name + " not coded");
  };
  const int64_t n = a.n_obs();
  const CodedColumn* condition = o.condition.empty() ? nullptr : &find(o.condition);
  std::vector<const CodedColumn*> context;
  for (const auto& c : o.context) context.push_back(&find(c));
  int32_t control = -1;
  if (!o.control.empty()) {
    if (!condition) throw std::invalid_argument("data convert: --control needs --condition (the column it labels)");
    const auto& cats = condition->categories;
    const auto it = std::find(cats.begin(), cats.end(), o.control);
    if (it == cats.end()) {
      std::string values;
      for (size_t k = 0; k < cats.size() && k < 20; ++k) values += (k ? ", " : "") + cats[k];
      throw std::invalid_argument(fmt::format("{}: control label '{}' is not a value of obs column '{}' (values: {}{})",
                                              a.source, o.control, o.condition, values, cats.size() > 20 ? ", ..." : ""));
    }
    control = static_cast<int32_t>(it - cats.begin());
  }
  if (condition) requireValues(a, *condition);
  for (const auto* c : context) requireValues(a, *c);

  // Sort key of a cell: context codes, then the condition with the control first; group ids follow
  // the key order.
  const auto keyOf = [&](int64_t i) {
    std::vector<int32_t> key(context.size() + 1);
    for (size_t k = 0; k < context.size(); ++k) key[k] = context[k]->codes[i];
    key.back() = !condition ? -1 : condition->codes[i] == control ? -1 : condition->codes[i];
    return key;
  };
  std::map<std::vector<int32_t>, int64_t> key_ids;
  for (int64_t i = 0; i < n; ++i) key_ids.emplace(keyOf(i), 0);
  int64_t next = 0;
  for (auto& [key, id] : key_ids) id = next++;
  std::vector<int64_t> group_of(n), sizes(key_ids.size(), 0);
  for (int64_t i = 0; i < n; ++i) ++sizes[group_of[i] = key_ids.at(keyOf(i))];
  // Counting sort into groups, then a seeded Fisher-Yates shuffle within each.
  std::vector<int64_t> begin(sizes.size() + 1, 0);
  for (size_t g = 0; g < sizes.size(); ++g) begin[g + 1] = begin[g] + sizes[g];
  Layout layout;
  layout.order.resize(n);
  std::vector<int64_t> fill(begin.begin(), begin.end() - 1);
  for (int64_t i = 0; i < n; ++i) layout.order[fill[group_of[i]]++] = i;
  std::mt19937_64 rng(core::splitMix64(o.seed));
  for (const auto& [k, g] : key_ids) {
    int64_t* first = layout.order.data() + begin[g];
    for (int64_t m = sizes[g]; m > 1; --m) std::swap(first[m - 1], first[core::uniformBelow(rng, m)]);
    layout.groups.push_back(begin[g]);
    layout.groups.push_back(begin[g + 1]);
    const int64_t row0 = first[0];
    layout.groups.push_back(condition ? condition->codes[row0] : -1);
    for (const auto* c : context) layout.groups.push_back(c->codes[row0]);
  }
  layout.group_count = static_cast<int64_t>(key_ids.size());
  return layout;
}

// Pass 1: entries per row, and whether the values fit uint16 / are whole. Negative and non-finite
// values are errors naming the cell and gene.
struct ValueScan {
  std::vector<int64_t> row_nnz;
  bool fits_u16 = true;
  bool whole = true;
};

ValueScan scanValues(RowSource& src, const AnnData& a, int64_t chunk) {
  ValueScan scan;
  scan.row_nnz.resize(src.rows());
  for (int64_t begin = 0; begin < src.rows(); begin += chunk) {
    const int64_t end = std::min(src.rows(), begin + chunk);
    const CsrMatrix m = src.read(begin, end);
    for (int64_t r = 0; r < m.rows; ++r) scan.row_nnz[begin + r] = m.indptr[r + 1] - m.indptr[r];
    if (const auto bad = firstNonCount(m, /*whole=*/false)) {
      const int64_t row = begin + bad->row;
      throw std::invalid_argument(fmt::format(
          "{}: {} of cell '{}' (row {}), gene '{}' (column {}) is {}; shards hold non-negative finite values (convert "
          "the raw counts, e.g. --matrix layers/counts or raw/X)",
          a.source.empty() ? "data" : a.source, "the value", row < static_cast<int64_t>(a.obs.index.size()) ? a.obs.index[row] : "",
          row, bad->col < static_cast<int64_t>(a.var.index.size()) ? a.var.index[bad->col] : "", bad->col, bad->value));
    }
    for (float v : m.data) {
      const bool whole = std::floor(v) == v;
      scan.whole &= whole;
      scan.fits_u16 &= whole && v <= 65535.0f;
    }
  }
  return scan;
}

template <typename T>
void putValues(const float* in, int64_t n, T* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = static_cast<T>(in[k]);
}
template <typename T>
void putIndices(const int32_t* in, int64_t n, T* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = static_cast<T>(in[k]);
}

uint64_t newDatasetId() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ core::splitMix64(static_cast<uint64_t>(::time(nullptr)));
}

// Prepares OUT_DIR.partial; OUT_DIR must not exist or be empty.
std::string prepareOutput(const std::string& out_dir) {
  if (out_dir.empty()) throw std::invalid_argument("data convert: the output directory is empty");
  std::error_code ec;
  if (fs::exists(out_dir, ec) && (!fs::is_directory(out_dir, ec) || !fs::is_empty(out_dir, ec)))
    throw std::invalid_argument(
        fmt::format("{}: exists and is not an empty directory; remove it or choose another output directory", out_dir));
  const std::string partial = fs::path(out_dir).lexically_normal().string() + ".partial";
  if (fs::exists(partial, ec)) {
    core::logWarn("data convert: removing {} left by an interrupted conversion", partial);
    fs::remove_all(partial);
  }
  fs::create_directories(partial);
  return partial;
}

ShardConvertReport convert(RowSource& src, const AnnData& a, const std::string& out_dir,
                           const ShardConvertOptions& o) {
  if (o.shard_cells < 1 || o.chunk_cells < 1)
    throw std::invalid_argument(fmt::format("data convert: shard and chunk sizes must be >= 1, got {} and {}",
                                            o.shard_cells, o.chunk_cells));
  const int64_t n = src.rows(), genes = src.cols();
  if (genes > INT32_MAX) throw std::invalid_argument(fmt::format("{}: {} genes exceed int32 gene ids", a.source, genes));

  // Stored obs columns: the requested (default every categorical) plus the grouping columns.
  std::vector<std::string> names = o.obs;
  if (names.empty())
    for (const auto& [name, c] : a.obs.columns)
      if (c.kind == Column::Kind::Categorical) names.push_back(name);
  if (!o.condition.empty()) names.push_back(o.condition);
  names.insert(names.end(), o.context.begin(), o.context.end());
  std::vector<CodedColumn> stored;
  for (const auto& name : names) {
    if (std::any_of(stored.begin(), stored.end(), [&](const auto& c) { return c.name == name; })) continue;
    stored.push_back(codeColumn(name, a.obsColumn(name)));
  }
  const Layout layout = groupCells(a, stored, o);

  const std::string partial = prepareOutput(out_dir);
  try {
    core::logInfo("data convert: pass 1 of 2, reading {} cells x {} genes", n, genes);
    const ValueScan scan = scanValues(src, a, o.chunk_cells);
    ShardConvertReport report;
    report.cells = n;
    report.genes = genes;
    report.values = scan.fits_u16 && !o.float_values ? ShardDtype::U16 : ShardDtype::F32;
    report.indices = genes <= 65536 ? ShardDtype::U16 : ShardDtype::U32;
    report.groups = layout.group_count;
    const uint64_t dataset_id = newDatasetId();

    // Shards over consecutive positions, indptr filled from the row lengths.
    std::vector<int64_t> shard_first;
    for (int64_t p = 0; p < n; p += o.shard_cells) shard_first.push_back(p);
    shard_first.push_back(n);
    const int64_t n_shards = static_cast<int64_t>(shard_first.size()) - 1;
    std::vector<std::unique_ptr<ShardFileWriter>> writers;
    std::vector<int64_t> shard_of(n), offset_of(n);  // by source row
    for (int64_t s = 0; s < n_shards; ++s) {
      const int64_t first = shard_first[s], count = shard_first[s + 1] - first;
      int64_t nnz = 0;
      for (int64_t p = first; p < first + count; ++p) nnz += scan.row_nnz[layout.order[p]];
      auto w = std::make_unique<ShardFileWriter>(partial + "/" + shardFileName(s), kShardMagic, dataset_id,
                                                 std::vector<ShardSectionSpec>{{"shape", ShardDtype::I64, 4},
                                                                               {"indptr", ShardDtype::I64, count + 1},
                                                                               {"indices", report.indices, nnz},
                                                                               {"values", report.values, nnz}});
      int64_t* shape = w->as<int64_t>("shape");
      shape[0] = s, shape[1] = first, shape[2] = count, shape[3] = genes;
      int64_t* indptr = w->as<int64_t>("indptr");
      indptr[0] = 0;
      for (int64_t p = first; p < first + count; ++p) {
        const int64_t row = layout.order[p];
        shard_of[row] = s;
        offset_of[row] = indptr[p - first];
        indptr[p - first + 1] = indptr[p - first] + scan.row_nnz[row];
      }
      report.nnz += nnz;
      writers.push_back(std::move(w));
    }

    core::logInfo("data convert: pass 2 of 2, writing {} shards ({} values, {} indices)", n_shards,
                  dtypeName(report.values), dtypeName(report.indices));
    std::vector<uint8_t*> indices_of(n_shards), values_of(n_shards);
    for (int64_t s = 0; s < n_shards; ++s) {
      indices_of[s] = writers[s]->as<uint8_t>("indices");
      values_of[s] = writers[s]->as<uint8_t>("values");
    }
    const size_t isz = dtypeSize(report.indices), vsz = dtypeSize(report.values);
    for (int64_t begin = 0; begin < n; begin += o.chunk_cells) {
      const int64_t end = std::min(n, begin + o.chunk_cells);
      const CsrMatrix m = src.read(begin, end);
      for (int64_t r = 0; r < m.rows; ++r) {
        const int64_t row = begin + r, lo = m.indptr[r], len = m.indptr[r + 1] - lo;
        if (len != scan.row_nnz[row])
          throw std::runtime_error(fmt::format("{}: row {} changed between the two passes", a.source, row));
        const int64_t s = shard_of[row], at = offset_of[row];
        if (report.indices == ShardDtype::U16)
          putIndices(m.indices.data() + lo, len, reinterpret_cast<uint16_t*>(indices_of[s] + at * isz));
        else
          putIndices(m.indices.data() + lo, len, reinterpret_cast<uint32_t*>(indices_of[s] + at * isz));
        if (report.values == ShardDtype::U16)
          putValues(m.data.data() + lo, len, reinterpret_cast<uint16_t*>(values_of[s] + at * vsz));
        else
          putValues(m.data.data() + lo, len, reinterpret_cast<float*>(values_of[s] + at * vsz));
      }
    }
    for (auto& w : writers) {
      w->commit();
      report.bytes += fs::file_size(w->path());
    }
    writers.clear();

    // The index.
    json meta;
    meta["format"] = "latentcell-shards";
    meta["version"] = kShardFormatVersion;
    meta["writer"] = std::string("latentcell ") + kVersion;
    meta["cells"] = n;
    meta["genes"] = genes;
    meta["nnz"] = report.nnz;
    meta["source"] = a.source;
    meta["source_cells"] = n;
    meta["matrix"] = o.matrix;
    meta["values"] = dtypeName(report.values);
    meta["indices"] = dtypeName(report.indices);
    meta["whole_numbers"] = scan.whole;
    meta["var_names"] = a.var.index;
    meta["obs"] = json::array();
    for (const auto& c : stored) meta["obs"].push_back({{"name", c.name}, {"categories", c.categories}});
    meta["condition"] = o.condition;
    meta["control"] = o.control;
    meta["context"] = o.context;
    meta["seed"] = o.seed;
    meta["shards"] = n_shards;
    meta["groups"] = layout.group_count;
    const std::string text = meta.dump(1);
    std::vector<ShardSectionSpec> sections = {{"meta", ShardDtype::Bytes, static_cast<int64_t>(text.size())},
                                              {"shard_first", ShardDtype::I64, n_shards + 1},
                                              {"source_row", ShardDtype::I64, n},
                                              {"groups", ShardDtype::I64, static_cast<int64_t>(layout.groups.size())}};
    for (size_t k = 0; k < stored.size(); ++k) sections.push_back({fmt::format("obs.{}", k), ShardDtype::I32, n});
    ShardFileWriter index(partial + "/" + kShardIndexFile, kShardIndexMagic, dataset_id, sections);
    std::copy(text.begin(), text.end(), index.as<char>("meta"));
    std::copy(shard_first.begin(), shard_first.end(), index.as<int64_t>("shard_first"));
    std::copy(layout.order.begin(), layout.order.end(), index.as<int64_t>("source_row"));
    std::copy(layout.groups.begin(), layout.groups.end(), index.as<int64_t>("groups"));
    for (size_t k = 0; k < stored.size(); ++k) {
      int32_t* codes = index.as<int32_t>(fmt::format("obs.{}", k));
      for (int64_t p = 0; p < n; ++p) codes[p] = stored[k].codes[layout.order[p]];
    }
    index.commit();
    report.bytes += fs::file_size(index.path());
    report.shards = n_shards;

    std::error_code ec;
    fs::rename(partial, out_dir, ec);
    if (ec) throw std::runtime_error(fmt::format("{}: cannot move {} into place ({})", out_dir, partial, ec.message()));
    return report;
  } catch (...) {
    std::error_code ec;
    fs::remove_all(partial, ec);
    throw;
  }
}

}  // namespace

ShardConvertReport convertH5adToShards(const std::string& h5ad, const std::string& out_dir,
                                       const ShardConvertOptions& options) {
  H5adReadOptions read;
  read.matrix = options.matrix;
  read.obsm = false;
  read.matrix_values = false;
  const AnnData tables = readH5ad(h5ad, read);
  H5adRows rows(h5ad, options.matrix);
  return convert(rows, tables, out_dir, options);
}

ShardConvertReport writeShards(const AnnData& adata, const std::string& out_dir, const ShardConvertOptions& options) {
  MemoryRows rows(adata.X);
  return convert(rows, adata, out_dir, options);
}

}  // namespace latentcell::data
