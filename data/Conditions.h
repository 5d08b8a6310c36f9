// Conditions (cell type, perturbation, batch, any obs column) as integer ids, and train/val/test
// splits of the cells.
//
// A vocabulary maps the values of one obs column to ids 0..K-1. When the column has a control label
// (e.g. `non-targeting`), the control gets id 0 so that models and evaluators find it without a
// lookup; the other values follow in sorted order, which makes the ids independent of category order
// and cell order (the same data saved twice give the same ids). Unknown or missing values are errors,
// never a silent extra id.
//
// Splits: random cells (fractions, seed), or held-out rules: a rule is a conjunction
// column in {values} (e.g. perturbation in {STAT1, JAK2} and batch in {rep_3}); one column alone
// holds out covariate values, several hold out combinations. Rule values must occur in the data, so
// that a typo does not hold out nothing.
//
// Vocabularies and the split are saved in the run directory as JSON (vocabularies.json, split.json)
// so that a run can be evaluated or resumed with exactly its ids and cells.
#pragma once

#include "data/AnnData.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::data {

struct Vocabulary {
  std::string column;
  std::string control;              // "" when the column has no control
  std::vector<std::string> values;  // id -> value; values[0] == control when there is one

  int64_t size() const { return static_cast<int64_t>(values.size()); }
  bool hasControl() const { return !control.empty(); }
  // The id of `value`; throws std::invalid_argument naming the column and value.
  int64_t id(const std::string& value) const;
};

// The vocabulary of obs[column]. With a control label, throws std::invalid_argument naming the column
// and the values it has when the label is absent. Missing values are an error naming the first cell.
Vocabulary buildVocabulary(const DataFrame& obs, const std::string& column, const std::string& control = "");

// Ids of every cell under `vocab` (which may come from another dataset, e.g. the training run);
// values not in the vocabulary are an error naming them.
std::vector<int64_t> encode(const Vocabulary& vocab, const DataFrame& obs);
// [cells, vocabularies.size()] int64: column k holds encode(vocabularies[k], obs).
at::Tensor conditionIds(const std::vector<Vocabulary>& vocabularies, const DataFrame& obs);

enum class SplitPart : uint8_t { Train = 0, Val = 1, Test = 2 };

struct Split {
  std::vector<SplitPart> part;  // per cell
  std::string description;      // how it was made, for the run record

  int64_t cells() const { return static_cast<int64_t>(part.size()); }
  std::vector<int64_t> indices(SplitPart which) const;  // ascending
};

// Random cells: round(val_fraction * cells) to val and round(test_fraction * cells) to test.
Split randomSplit(int64_t cells, double val_fraction, double test_fraction, uint64_t seed);

// One held-out rule: a cell matches when, for every (column, values), its value is one of values.
using HoldOutRule = std::vector<std::pair<std::string, std::vector<std::string>>>;

// Parses a rule written "column=v1,v2; column2=v3" (config files); throws std::invalid_argument
// saying how to write it.
HoldOutRule parseHoldOutRule(const std::string& text);
std::vector<HoldOutRule> parseHoldOutRules(const std::vector<std::string>& texts);

// Cells matching any of `test_rules` go to test; of the others, those matching any of `val_rules` go
// to val, and then a random val_fraction of the remaining cells (seeded) joins val as well.
Split holdOutSplit(const DataFrame& obs, const std::vector<HoldOutRule>& test_rules,
                   const std::vector<HoldOutRule>& val_rules = {}, double val_fraction = 0.0, uint64_t seed = 0);

// RUN_DIR/vocabularies.json and RUN_DIR/split.json. Loading checks the format and, for the split,
// that it covers `expected_cells` cells (when >= 0); errors name the file.
void saveVocabularies(const std::vector<Vocabulary>& vocabularies, const std::string& run_dir);
std::vector<Vocabulary> loadVocabularies(const std::string& run_dir);
// The vocabularies of a vocabularies.json text held in memory; `source` names it in errors.
std::vector<Vocabulary> parseVocabularies(const std::string& json_text, const std::string& source);
void saveSplit(const Split& split, const std::string& run_dir);
Split loadSplit(const std::string& run_dir, int64_t expected_cells = -1);

}  // namespace latentcell::data
