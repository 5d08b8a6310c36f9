// In-memory AnnData helpers (see AnnData.h).
#include "data/AnnData.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace latentcell::data {

int64_t Column::size() const {
  switch (kind) {
    case Kind::Categorical: return static_cast<int64_t>(codes.size());
    case Kind::String: return static_cast<int64_t>(strings.size());
    case Kind::Float: return static_cast<int64_t>(floats.size());
    case Kind::Int: return static_cast<int64_t>(ints.size());
    case Kind::Bool: return static_cast<int64_t>(bools.size());
  }
  return 0;
}

std::string Column::text(int64_t i) const {
  if (!missing.empty() && missing[i]) return "";
  switch (kind) {
    case Kind::Categorical: return codes[i] < 0 ? std::string() : categories[codes[i]];
    case Kind::String: return strings[i];
    case Kind::Float: {
      if (std::isnan(floats[i])) return "";
      return fmt::format("{}", floats[i]);  // shortest text that round-trips
    }
    case Kind::Int: return std::to_string(ints[i]);
    case Kind::Bool: return bools[i] ? "True" : "False";
  }
  return "";
}

const Column* DataFrame::find(const std::string& name) const {
  for (const auto& [n, c] : columns)
    if (n == name) return &c;
  return nullptr;
}

const Column& DataFrame::at(const std::string& name, const std::string& what) const {
  if (const auto* c = find(name)) return *c;
  std::string have;
  for (const auto& [n, c] : columns) have += (have.empty() ? "" : ", ") + n;
  throw std::invalid_argument(what + " has no column '" + name + "' (columns: " +
                              (have.empty() ? "none" : have) + ")");
}

const Column& AnnData::obsColumn(const std::string& name) const {
  return obs.at(name, source.empty() ? "obs" : "obs of " + source);
}

CsrMatrix takeRows(const CsrMatrix& m, const std::vector<int64_t>& rows) {
  CsrMatrix out;
  out.rows = static_cast<int64_t>(rows.size());
  out.cols = m.cols;
  out.indptr.reserve(rows.size() + 1);
  out.indptr.push_back(0);
  for (int64_t r : rows) {
    if (r < 0 || r >= m.rows) throw std::out_of_range("row " + std::to_string(r) + " of a matrix with " + std::to_string(m.rows) + " rows");
    out.indices.insert(out.indices.end(), m.indices.begin() + m.indptr[r], m.indices.begin() + m.indptr[r + 1]);
    out.data.insert(out.data.end(), m.data.begin() + m.indptr[r], m.data.begin() + m.indptr[r + 1]);
    out.indptr.push_back(static_cast<int64_t>(out.data.size()));
  }
  return out;
}

DataFrame takeRows(const DataFrame& frame, const std::vector<int64_t>& rows) {
  auto gather = [&](auto& values) {
    if (values.empty()) return;
    std::decay_t<decltype(values)> out;
    out.reserve(rows.size());
    for (int64_t r : rows) out.push_back(values.at(static_cast<size_t>(r)));
    values = std::move(out);
  };
  DataFrame out;
  out.index_name = frame.index_name;
  out.index = frame.index;
  gather(out.index);
  for (const auto& [name, column] : frame.columns) {
    Column c = column;
    gather(c.codes);
    gather(c.strings);
    gather(c.floats);
    gather(c.ints);
    gather(c.bools);
    gather(c.missing);
    out.columns.emplace_back(name, std::move(c));
  }
  return out;
}

void removeUnusedCategories(DataFrame& frame) {
  for (auto& [name, column] : frame.columns) {
    if (column.kind != Column::Kind::Categorical) continue;
    std::vector<int32_t> remap(column.categories.size(), -1);
    for (int32_t code : column.codes)
      if (code >= 0) remap[static_cast<size_t>(code)] = 0;
    std::vector<std::string> kept;
    for (size_t c = 0; c < remap.size(); ++c) {
      if (remap[c] < 0) continue;
      remap[c] = static_cast<int32_t>(kept.size());
      kept.push_back(column.categories[c]);
    }
    for (auto& code : column.codes)
      if (code >= 0) code = remap[static_cast<size_t>(code)];
    column.categories = std::move(kept);
  }
}

}  // namespace latentcell::data
