// Condition vocabularies and splits (see Conditions.h).
#include "data/Conditions.h"

#include "core/Random.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <set>
#include <stdexcept>

namespace latentcell::data {
namespace {

using nlohmann::json;

// "a, b, c" with at most `limit` items and the total when there are more, for one-line errors.
std::string listSome(const std::vector<std::string>& items, size_t limit = 20) {
  std::string out;
  for (size_t i = 0; i < std::min(limit, items.size()); ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += fmt::format(", ... ({} in all)", items.size());
  return out.empty() ? "none" : out;
}

std::vector<std::string> columnTexts(const DataFrame& obs, const std::string& column) {
  const Column& col = obs.at(column, "obs");
  std::vector<std::string> out(col.size());
  for (int64_t i = 0; i < col.size(); ++i) {
    out[i] = col.text(i);
    if (out[i].empty())
      throw std::invalid_argument(fmt::format("obs column '{}' is missing a value at cell {}", column, i));
  }
  return out;
}

std::vector<int64_t> randomOrder(int64_t n, uint64_t seed) {
  at::Generator gen = core::makeGenerator(seed);
  const at::Tensor p = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
  return std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + n);
}

int64_t fractionCount(double fraction, int64_t n, const char* what) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw std::invalid_argument(fmt::format("split: {} must be in [0, 1], got {}", what, fraction));
  return static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
}

// Per cell: does it match any of `rules`? Checks that every rule column exists and every value occurs.
std::vector<uint8_t> matchRules(const DataFrame& obs, const std::vector<HoldOutRule>& rules, int64_t n) {
  std::vector<uint8_t> hit(n, 0);
  std::map<std::string, std::vector<std::string>> texts;
  for (const auto& rule : rules) {
    if (rule.empty()) throw std::invalid_argument("split: a hold-out rule has no columns");
    std::vector<uint8_t> all(n, 1);
    for (const auto& [column, values] : rule) {
      if (!texts.count(column)) texts[column] = columnTexts(obs, column);
      const auto& t = texts[column];
      const std::set<std::string> have(t.begin(), t.end());
      std::vector<std::string> absent;
      for (const auto& v : values)
        if (!have.count(v)) absent.push_back(v);
      if (!absent.empty())
        throw std::invalid_argument(fmt::format("split: obs column '{}' has no value {} (values: {})", column,
                                                listSome(absent), listSome({have.begin(), have.end()})));
      const std::set<std::string> wanted(values.begin(), values.end());
      for (int64_t i = 0; i < n; ++i) all[i] &= wanted.count(t[i]) ? 1 : 0;
    }
    for (int64_t i = 0; i < n; ++i) hit[i] |= all[i];
  }
  return hit;
}

std::string describeRules(const std::vector<HoldOutRule>& rules) {
  std::vector<std::string> parts;
  for (const auto& rule : rules) {
    std::vector<std::string> terms;
    for (const auto& [column, values] : rule) terms.push_back(fmt::format("{} in {{{}}}", column, listSome(values, 100)));
    std::string s;
    for (size_t i = 0; i < terms.size(); ++i) s += (i ? " and " : "") + terms[i];
    parts.push_back("(" + s + ")");
  }
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? " or " : "") + parts[i];
  return out;
}

void writeJson(const json& j, const std::string& path) {
  std::ofstream out(path);
  out << j.dump(1) << "\n";
  if (!out) throw std::runtime_error("cannot write " + path);
}

json readJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path + " (no such file?)");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
}

std::string filePath(const std::string& run_dir, const char* name) {
  return (std::filesystem::path(run_dir) / name).string();
}

}  // namespace

int64_t Vocabulary::id(const std::string& value) const {
  const auto it = std::find(values.begin(), values.end(), value);
  if (it == values.end())
    throw std::invalid_argument(fmt::format("value '{}' is not in the vocabulary of '{}' ({})", value, column,
                                            listSome(values)));
  return it - values.begin();
}

Vocabulary buildVocabulary(const DataFrame& obs, const std::string& column, const std::string& control) {
  const std::vector<std::string> texts = columnTexts(obs, column);
  std::set<std::string> distinct(texts.begin(), texts.end());
  Vocabulary v;
  v.column = column;
  v.control = control;
  if (!control.empty()) {
    if (!distinct.count(control))
      throw std::invalid_argument(fmt::format("obs column '{}' has no control label '{}' (values: {})", column,
                                              control, listSome({distinct.begin(), distinct.end()})));
    distinct.erase(control);
    v.values.push_back(control);
  }
  v.values.insert(v.values.end(), distinct.begin(), distinct.end());
  return v;
}

std::vector<int64_t> encode(const Vocabulary& vocab, const DataFrame& obs) {
  const std::vector<std::string> texts = columnTexts(obs, vocab.column);
  std::map<std::string, int64_t> ids;
  for (int64_t k = 0; k < vocab.size(); ++k) ids[vocab.values[k]] = k;
  std::vector<int64_t> out(texts.size());
  std::set<std::string> unknown;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto it = ids.find(texts[i]);
    if (it == ids.end()) unknown.insert(texts[i]);
    else out[i] = it->second;
  }
  if (!unknown.empty())
    throw std::invalid_argument(fmt::format("obs column '{}' has values not in its vocabulary: {}", vocab.column,
                                            listSome({unknown.begin(), unknown.end()})));
  return out;
}

at::Tensor conditionIds(const std::vector<Vocabulary>& vocabularies, const DataFrame& obs) {
  const int64_t k = static_cast<int64_t>(vocabularies.size());
  const int64_t n = static_cast<int64_t>(obs.index.size());
  at::Tensor ids = at::zeros({n, k}, at::kLong);
  for (int64_t c = 0; c < k; ++c) {
    const std::vector<int64_t> col = encode(vocabularies[c], obs);
    if (static_cast<int64_t>(col.size()) != n)
      throw std::invalid_argument(fmt::format("obs column '{}' has {} values for {} cells", vocabularies[c].column,
                                              col.size(), n));
    ids.select(1, c).copy_(at::tensor(col, at::kLong));
  }
  return ids;
}

std::vector<int64_t> Split::indices(SplitPart which) const {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < cells(); ++i)
    if (part[i] == which) out.push_back(i);
  return out;
}

Split randomSplit(int64_t cells, double val_fraction, double test_fraction, uint64_t seed) {
  const int64_t n_val = fractionCount(val_fraction, cells, "val_fraction");
  const int64_t n_test = fractionCount(test_fraction, cells, "test_fraction");
  if (n_val + n_test > cells)
    throw std::invalid_argument(fmt::format("split: val_fraction {} + test_fraction {} exceed 1", val_fraction,
                                            test_fraction));
  Split s;
  s.part.assign(cells, SplitPart::Train);
  const std::vector<int64_t> order = randomOrder(cells, seed);
  for (int64_t k = 0; k < n_val + n_test; ++k) s.part[order[k]] = k < n_val ? SplitPart::Val : SplitPart::Test;
  s.description = fmt::format("random cells: val_fraction {}, test_fraction {}, seed {}", val_fraction,
                              test_fraction, seed);
  return s;
}

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

}  // namespace

HoldOutRule parseHoldOutRule(const std::string& text) {
  HoldOutRule rule;
  std::stringstream terms(text);
  for (std::string term; std::getline(terms, term, ';');) {
    term = trim(term);
    if (term.empty()) continue;
    const auto eq = term.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == term.size()) {
      throw std::invalid_argument("rule '" + text + "': term '" + term + "' must be column=value1,value2");
    }
    std::vector<std::string> values;
    std::stringstream list(term.substr(eq + 1));
    for (std::string value; std::getline(list, value, ',');)
      if (!trim(value).empty()) values.push_back(trim(value));
    rule.emplace_back(trim(term.substr(0, eq)), values);
  }
  if (rule.empty()) throw std::invalid_argument("rule '" + text + "' names no column; write column=value1,value2");
  return rule;
}

std::vector<HoldOutRule> parseHoldOutRules(const std::vector<std::string>& texts) {
  std::vector<HoldOutRule> rules;
  for (const auto& text : texts) rules.push_back(parseHoldOutRule(text));
  return rules;
}

Split holdOutSplit(const DataFrame& obs, const std::vector<HoldOutRule>& test_rules,
                   const std::vector<HoldOutRule>& val_rules, double val_fraction, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(obs.index.size());
  const std::vector<uint8_t> test = matchRules(obs, test_rules, n);
  const std::vector<uint8_t> val = matchRules(obs, val_rules, n);
  Split s;
  s.part.assign(n, SplitPart::Train);
  std::vector<int64_t> rest;
  for (int64_t i = 0; i < n; ++i) {
    if (test[i]) s.part[i] = SplitPart::Test;
    else if (val[i]) s.part[i] = SplitPart::Val;
    else rest.push_back(i);
  }
  const int64_t n_val = fractionCount(val_fraction, static_cast<int64_t>(rest.size()), "val_fraction");
  const std::vector<int64_t> order = randomOrder(static_cast<int64_t>(rest.size()), seed);
  for (int64_t k = 0; k < n_val; ++k) s.part[rest[order[k]]] = SplitPart::Val;
  s.description = fmt::format("held out: test {}; val {}; random val_fraction {} of the rest, seed {}",
                              test_rules.empty() ? "none" : describeRules(test_rules),
                              val_rules.empty() ? "none" : describeRules(val_rules), val_fraction, seed);
  return s;
}

void saveVocabularies(const std::vector<Vocabulary>& vocabularies, const std::string& run_dir) {
  json list = json::array();
  for (const auto& v : vocabularies) list.push_back({{"column", v.column}, {"control", v.control}, {"values", v.values}});
  writeJson({{"format", "latentcell-vocabularies"}, {"version", 1}, {"vocabularies", list}},
            filePath(run_dir, "vocabularies.json"));
}

namespace {

std::vector<Vocabulary> vocabulariesFromJson(const json& j, const std::string& source) {
  std::vector<Vocabulary> out;
  try {
    if (j.at("format") != "latentcell-vocabularies" || j.at("version") != 1)
      throw std::runtime_error(source + ": not a latentcell vocabularies file of version 1");
    for (const auto& e : j.at("vocabularies")) {
      Vocabulary v;
      v.column = e.at("column").get<std::string>();
      v.control = e.at("control").get<std::string>();
      v.values = e.at("values").get<std::vector<std::string>>();
      if (v.hasControl() && (v.values.empty() || v.values[0] != v.control))
        throw std::runtime_error(source + ": vocabulary '" + v.column + "' does not start with its control '" +
                                 v.control + "'");
      out.push_back(std::move(v));
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(source + ": malformed vocabularies: " + e.what());
  }
  return out;
}

}  // namespace

std::vector<Vocabulary> loadVocabularies(const std::string& run_dir) {
  const std::string path = filePath(run_dir, "vocabularies.json");
  return vocabulariesFromJson(readJson(path), path);
}

std::vector<Vocabulary> parseVocabularies(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw std::runtime_error(source + ": not valid JSON: " + e.what());
  }
  return vocabulariesFromJson(j, source);
}

void saveSplit(const Split& split, const std::string& run_dir) {
  // Train is the complement, so the file holds only the (smaller) val and test lists.
  writeJson({{"format", "latentcell-split"},
             {"version", 1},
             {"cells", split.cells()},
             {"description", split.description},
             {"val", split.indices(SplitPart::Val)},
             {"test", split.indices(SplitPart::Test)}},
            filePath(run_dir, "split.json"));
}

Split loadSplit(const std::string& run_dir, int64_t expected_cells) {
  const std::string path = filePath(run_dir, "split.json");
  const json j = readJson(path);
  Split s;
  try {
    if (j.at("format") != "latentcell-split" || j.at("version") != 1)
      throw std::runtime_error(path + ": not a latentcell split file of version 1");
    const int64_t cells = j.at("cells").get<int64_t>();
    if (expected_cells >= 0 && cells != expected_cells)
      throw std::runtime_error(fmt::format("{}: the split is over {} cells but the data have {}", path, cells,
                                           expected_cells));
    s.part.assign(cells, SplitPart::Train);
    s.description = j.at("description").get<std::string>();
    for (const auto& [key, which] : {std::pair{"val", SplitPart::Val}, std::pair{"test", SplitPart::Test}}) {
      for (int64_t i : j.at(key).get<std::vector<int64_t>>()) {
        if (i < 0 || i >= cells || s.part[i] != SplitPart::Train)
          throw std::runtime_error(fmt::format("{}: {} index {} is out of range or listed twice", path, key, i));
        s.part[i] = which;
      }
    }
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": malformed split: " + e.what());
  }
  return s;
}

}  // namespace latentcell::data
