// Tests for data/Conditions: vocabularies (control first, sorted values, errors naming the column and
// its values), per-cell ids, random and held-out splits, and the JSON round trip to a run directory.
#include "data/Conditions.h"

#include "TestUtil.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <functional>

using namespace latentcell::data;

namespace {

Column categorical(std::vector<std::string> categories, std::vector<int32_t> codes) {
  Column c;
  c.kind = Column::Kind::Categorical;
  c.categories = std::move(categories);
  c.codes = std::move(codes);
  return c;
}

// 8 cells: perturbation x batch, with a control label "ctrl".
DataFrame makeObs() {
  DataFrame obs;
  for (int i = 0; i < 8; ++i) obs.index.push_back("cell" + std::to_string(i));
  obs.columns.emplace_back("perturbation", categorical({"ctrl", "STAT1", "JAK2"}, {1, 0, 2, 1, 0, 2, 1, 0}));
  Column batch;
  batch.kind = Column::Kind::String;
  batch.strings = {"b1", "b1", "b1", "b1", "b2", "b2", "b2", "b2"};
  obs.columns.emplace_back("batch", batch);
  Column rep;
  rep.kind = Column::Kind::Int;
  rep.ints = {3, 1, 2, 3, 1, 2, 3, 1};
  obs.columns.emplace_back("rep", rep);
  return obs;
}

using latentcell::test::errorOf;

}  // namespace

TEST(Conditions, VocabularyPutsControlFirstAndSortsTheRest) {
  const DataFrame obs = makeObs();
  const Vocabulary p = buildVocabulary(obs, "perturbation", "ctrl");
  EXPECT_EQ(p.values, (std::vector<std::string>{"ctrl", "JAK2", "STAT1"}));
  EXPECT_EQ(p.id("ctrl"), 0);
  EXPECT_EQ(p.id("STAT1"), 2);
  EXPECT_EQ(encode(p, obs), (std::vector<int64_t>{2, 0, 1, 2, 0, 1, 2, 0}));
  const Vocabulary r = buildVocabulary(obs, "rep");
  EXPECT_FALSE(r.hasControl());
  EXPECT_EQ(r.values, (std::vector<std::string>{"1", "2", "3"}));

  const at::Tensor ids = conditionIds({p, buildVocabulary(obs, "batch")}, obs);
  EXPECT_EQ(ids.sizes(), (at::IntArrayRef{8, 2}));
  EXPECT_EQ(ids.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(ids.select(1, 1), torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kLong)));
}

TEST(Conditions, ErrorsNameColumnAndValues) {
  DataFrame obs = makeObs();
  EXPECT_EQ(errorOf([&] { buildVocabulary(obs, "perturbation", "non-targeting"); }),
            "obs column 'perturbation' has no control label 'non-targeting' (values: JAK2, STAT1, ctrl)");
  EXPECT_NE(errorOf([&] { buildVocabulary(obs, "cell_type"); }).find("obs has no column 'cell_type'"),
            std::string::npos);
  const Vocabulary b = buildVocabulary(obs, "batch");
  EXPECT_EQ(errorOf([&] { b.id("b3"); }), "value 'b3' is not in the vocabulary of 'batch' (b1, b2)");
  // A vocabulary from other data: values it does not know are listed.
  std::get<1>(obs.columns[1]).strings[5] = "b9";
  EXPECT_EQ(errorOf([&] { encode(b, obs); }), "obs column 'batch' has values not in its vocabulary: b9");
  std::get<1>(obs.columns[0]).codes[3] = -1;
  EXPECT_EQ(errorOf([&] { buildVocabulary(obs, "perturbation"); }),
            "obs column 'perturbation' is missing a value at cell 3");
}

TEST(Conditions, RandomSplitHasTheRequestedSizesAndIsSeeded) {
  const Split s = randomSplit(1000, 0.1, 0.2, 4);
  EXPECT_EQ(s.indices(SplitPart::Val).size(), 100u);
  EXPECT_EQ(s.indices(SplitPart::Test).size(), 200u);
  EXPECT_EQ(s.indices(SplitPart::Train).size(), 700u);
  EXPECT_EQ(s.part, randomSplit(1000, 0.1, 0.2, 4).part);
  EXPECT_NE(s.part, randomSplit(1000, 0.1, 0.2, 5).part);
  EXPECT_THROW(randomSplit(10, 0.6, 0.6, 0), std::invalid_argument);
  EXPECT_THROW(randomSplit(10, -0.1, 0.0, 0), std::invalid_argument);
}

TEST(Conditions, HoldOutCombinationsAndCovariates) {
  const DataFrame obs = makeObs();
  // STAT1 in batch b2 only: cell 6.
  Split s = holdOutSplit(obs, {{{"perturbation", {"STAT1"}}, {"batch", {"b2"}}}});
  EXPECT_EQ(s.indices(SplitPart::Test), (std::vector<int64_t>{6}));
  EXPECT_EQ(s.indices(SplitPart::Train).size(), 7u);
  EXPECT_NE(s.description.find("perturbation in {STAT1} and batch in {b2}"), std::string::npos) << s.description;
  // A covariate value held out for test, another rule for val, plus random val cells of the rest.
  s = holdOutSplit(obs, {{{"rep", {"3"}}}}, {{{"perturbation", {"JAK2"}}}}, 0.5, 1);
  EXPECT_EQ(s.indices(SplitPart::Test), (std::vector<int64_t>{0, 3, 6}));
  const auto val = s.indices(SplitPart::Val);
  EXPECT_EQ(val.size(), 2u + 2u);  // cells 2 and 5 (JAK2), then half of the remaining 3 rounded
  EXPECT_TRUE(std::find(val.begin(), val.end(), 2) != val.end());
  EXPECT_TRUE(std::find(val.begin(), val.end(), 5) != val.end());
  // A value that does not occur is an error, not an empty hold-out.
  EXPECT_EQ(errorOf([&] { holdOutSplit(obs, {{{"perturbation", {"STAT2"}}}}); }),
            "split: obs column 'perturbation' has no value STAT2 (values: JAK2, STAT1, ctrl)");
}

TEST(Conditions, HoldOutRulesParseFromConfigText) {
  const auto rule = parseHoldOutRule(" batch=b2 ; perturbation=STAT1, JAK2");
  ASSERT_EQ(rule.size(), 2u);
  EXPECT_EQ(rule[0], (std::pair<std::string, std::vector<std::string>>{"batch", {"b2"}}));
  EXPECT_EQ(rule[1], (std::pair<std::string, std::vector<std::string>>{"perturbation", {"STAT1", "JAK2"}}));
  EXPECT_EQ(holdOutSplit(makeObs(), {rule}).indices(SplitPart::Test), (std::vector<int64_t>{5, 6}));
  EXPECT_NE(errorOf([] { parseHoldOutRule("perturbation"); }).find("must be column=value1,value2"), std::string::npos);
  EXPECT_NE(errorOf([] { parseHoldOutRule(" ; "); }).find("names no column"), std::string::npos);
}

TEST(Conditions, UnusedCategoriesAreDroppedAndCodesRenumbered) {
  DataFrame obs = takeRows(makeObs(), {2, 5, 0});  // JAK2, JAK2, STAT1: no ctrl left
  removeUnusedCategories(obs);
  const auto& p = obs.columns[0].second;
  EXPECT_EQ(p.categories, (std::vector<std::string>{"STAT1", "JAK2"}));
  EXPECT_EQ(p.text(0), "JAK2");
  EXPECT_EQ(p.text(1), "JAK2");
  EXPECT_EQ(p.text(2), "STAT1");
  EXPECT_EQ(obs.columns[1].second.strings, (std::vector<std::string>{"b1", "b2", "b1"}));
}

TEST(Conditions, SaveAndLoadRoundTrip) {
  latentcell::test::TempDir dir;
  const DataFrame obs = makeObs();
  const std::vector<Vocabulary> vocabs = {buildVocabulary(obs, "perturbation", "ctrl"), buildVocabulary(obs, "batch")};
  saveVocabularies(vocabs, dir.path().string());
  const auto back = loadVocabularies(dir.path().string());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].values, vocabs[0].values);
  EXPECT_EQ(back[0].control, "ctrl");
  EXPECT_EQ(back[1].column, "batch");
  EXPECT_FALSE(back[1].hasControl());

  const Split s = randomSplit(50, 0.2, 0.1, 9);
  saveSplit(s, dir.path().string());
  const Split t = loadSplit(dir.path().string(), 50);
  EXPECT_EQ(t.part, s.part);
  EXPECT_EQ(t.description, s.description);
  EXPECT_NE(errorOf([&] { loadSplit(dir.path().string(), 51); }).find("the split is over 50 cells but the data have 51"),
            std::string::npos);

  std::ofstream(dir.file("split.json")) << "{\"format\": \"latentcell-split\", \"version\": 1, \"cells\": 3}";
  EXPECT_NE(errorOf([&] { loadSplit(dir.path().string()); }).find("split.json: malformed split"), std::string::npos);
  std::ofstream(dir.file("vocabularies.json")) << "[1, 2";
  EXPECT_NE(errorOf([&] { loadVocabularies(dir.path().string()); }).find("vocabularies.json: not valid JSON"),
            std::string::npos);
  EXPECT_NE(errorOf([&] { loadVocabularies(dir.file("nowhere")); }).find("cannot read"), std::string::npos);
}
