// In-memory AnnData helpers (see AnnData.h).
#include "data/AnnData.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

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

}  // namespace latentcell::data
