// eval/Baselines and `latentcell baseline`: each kind on a small hand-checked case (log1p-valued
// inputs, so the numbers are the means written out below), the output's layout (LIKE's cells, obs,
// var; controls copied; TRAIN's genes matched by name), and the errors. That cell-eval accepts a
// baseline and agrees with `latentcell evaluate` on it is tested in tests/test_cell_eval.cpp.
#include "TestUtil.h"

#include "data/H5ad.h"
#include "eval/Baselines.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace latentcell {
namespace {

using data::AnnData;
using data::Column;

Column strings(const std::vector<std::string>& values) {
  Column c;
  c.kind = Column::Kind::String;
  c.strings = values;
  return c;
}

// Cells with (context, perturbation) labels and dense rows; gene names in `genes`.
AnnData cells(const std::vector<std::string>& genes, const std::vector<std::pair<std::string, std::string>>& labels,
              const std::vector<std::vector<float>>& rows, const std::string& prefix) {
  AnnData a;
  a.X = test::csrFromDense(rows);
  a.var.index = genes;
  std::vector<std::string> ct, pert;
  for (size_t i = 0; i < labels.size(); ++i) {
    a.obs.index.push_back(prefix + std::to_string(i));
    ct.push_back(labels[i].first);
    pert.push_back(labels[i].second);
  }
  a.obs.columns = {{"ct", strings(ct)}, {"target", strings(pert)}, {"depth", {}}};
  a.obs.columns[2].second.kind = Column::Kind::Float;
  a.obs.columns[2].second.floats.assign(labels.size(), 1.5);
  a.source = prefix + ".h5ad";
  return a;
}

// TRAIN (log1p values, genes in the order g2, g0, g1). In LIKE's gene order (g0, g1, g2):
//   A nt: [1.5 .5 .25], [.5 .5 .75] -> ctrl_A = [1 .5 .5];  A p1: [2.5 .5 .5] -> delta_A,p1 = [1.5 0 0]
//   B nt: [.25 2 1] = ctrl_B;  B p1: [.75 2.5 1] -> delta_B,p1 = [.5 .5 0]
//   B p2: [.25 1 3], [.25 3 3] -> mean [.25 2 3], delta_B,p2 = [0 0 2]
// so delta_p1 = [1 .25 0], delta_p2 = [0 0 2], and their average [.5 .125 1].
AnnData train() {
  const std::vector<std::vector<float>> likeOrder = {{1.5f, .5f, .25f}, {.5f, .5f, .75f}, {2.5f, .5f, .5f},
                                                     {.25f, 2.f, 1.f},  {.75f, 2.5f, 1.f}, {.25f, 1.f, 3.f},
                                                     {.25f, 3.f, 3.f}};
  std::vector<std::vector<float>> rows;
  for (const auto& r : likeOrder) rows.push_back({r[2], r[0], r[1]});
  return cells({"g2", "g0", "g1"},
               {{"A", "nt"}, {"A", "nt"}, {"A", "p1"}, {"B", "nt"}, {"B", "p1"}, {"B", "p2"}, {"B", "p2"}}, rows,
               "train");
}

// LIKE: every (context, perturbation) to predict, plus controls (C has no training cells at all).
AnnData like(bool withContextC) {
  std::vector<std::pair<std::string, std::string>> labels = {{"A", "nt"}, {"A", "p1"}, {"A", "p2"}, {"A", "p3"},
                                                             {"B", "p1"}, {"B", "nt"}, {"A", "p1"}};
  std::vector<std::vector<float>> rows = {{1.25f, .75f, .5f}, {9, 9, 9}, {9, 9, 9}, {9, 9, 9},
                                          {9, 9, 9},          {.5f, 0, 1}, {9, 9, 9}};
  if (withContextC) {
    labels.insert(labels.end(), {{"C", "nt"}, {"C", "p1"}});
    rows.insert(rows.end(), {{.5f, .5f, .5f}, {9, 9, 9}});
  }
  return cells({"g0", "g1", "g2"}, labels, rows, "like");
}

std::vector<float> row(const data::CsrMatrix& m, int64_t r) {
  std::vector<float> v(size_t(m.cols), 0.0f);
  for (int64_t k = m.indptr[r]; k < m.indptr[r + 1]; ++k) v[size_t(m.indices[k])] = m.data[k];
  return v;
}

eval::BaselineOptions options(eval::BaselineKind kind) {
  eval::BaselineOptions o;
  o.kind = kind;
  o.pertCol = "target";
  o.controlPert = "nt";
  o.celltypeCol = "ct";
  return o;
}

void expectLayout(const AnnData& out, const AnnData& l) {
  EXPECT_EQ(out.obs.index, l.obs.index);
  ASSERT_EQ(out.obs.columns.size(), l.obs.columns.size());
  for (size_t c = 0; c < l.obs.columns.size(); ++c) EXPECT_EQ(out.obs.columns[c].first, l.obs.columns[c].first);
  EXPECT_EQ(out.var.index, l.var.index);
  EXPECT_EQ(out.X.rows, l.X.rows);
  for (int64_t i = 0; i < l.X.rows; ++i) {  // controls are LIKE's cells, unchanged
    if (l.obs.columns[1].second.strings[size_t(i)] == "nt") {
      EXPECT_EQ(row(out.X, i), row(l.X, i)) << "cell " << i;
    }
  }
}

// A shift learned in one context can exceed a gene's control mean in another: the prediction stops
// at zero (log1p expression), which evaluators require.
TEST(Baseline, PerturbMeanNeverGoesBelowZero) {
  // delta_p1 (context B) = [-1.5, .5]; ctrl_A = [.25, 1] -> [0 (clamped from -1.25), 1.5].
  const AnnData t = cells({"g0", "g1"}, {{"A", "nt"}, {"B", "nt"}, {"B", "p1"}}, {{.25f, 1}, {2, 1}, {.5f, 1.5f}}, "t");
  const AnnData l = cells({"g0", "g1"}, {{"A", "nt"}, {"A", "p1"}}, {{.25f, 1}, {9, 9}}, "l");
  const AnnData out = eval::makeBaseline(t, l, options(eval::BaselineKind::PerturbMean));
  EXPECT_EQ(row(out.X, 1), (std::vector<float>{0.f, 1.5f}));
}

TEST(Baseline, PerturbMeanByHand) {
  const AnnData l = like(true);
  eval::BaselineReport report;
  const AnnData out = eval::makeBaseline(train(), l, options(eval::BaselineKind::PerturbMean), &report);
  expectLayout(out, l);
  EXPECT_FALSE(report.trainNormalised || report.likeNormalised);
  EXPECT_EQ(report.predictedCells, 6);
  EXPECT_EQ(report.controlCells, 3);
  const std::map<int64_t, std::vector<float>> expected = {
      {1, {2.f, .75f, .5f}},     // ctrl_A + delta_p1
      {2, {1.f, .5f, 2.5f}},     // ctrl_A + delta_p2
      {3, {1.5f, .625f, 1.5f}},  // ctrl_A + average delta (p3 has no training cells)
      {4, {1.25f, 2.25f, 1.f}},  // ctrl_B + delta_p1
      {6, {2.f, .75f, .5f}},     // the same condition, the same prediction
      {8, {1.5f, .75f, .5f}}};   // LIKE's ctrl_C + delta_p1 (no training controls of C)
  for (const auto& [i, v] : expected) EXPECT_EQ(row(out.X, i), v) << "cell " << i;
  EXPECT_EQ(report.unseenPerturbations, std::vector<std::string>{"p3"});
  EXPECT_EQ(report.controlsFromLike, std::vector<std::string>{"C"});
  EXPECT_EQ(out.uns_strings.at("baseline"), "perturb-mean");
}

TEST(Baseline, CellMeanByHand) {
  const AnnData l = like(true);
  const AnnData out = eval::makeBaseline(train(), l, options(eval::BaselineKind::CellMean));
  expectLayout(out, l);
  // All 4 perturbed training cells, whatever their context: [3.75 7 7.5] / 4.
  for (int64_t i : {1, 2, 3, 4, 6, 8}) EXPECT_EQ(row(out.X, i), (std::vector<float>{.9375f, 1.75f, 1.875f}));
}

TEST(Baseline, ContextMeanByHand) {
  const AnnData l = like(false);
  const AnnData out = eval::makeBaseline(train(), l, options(eval::BaselineKind::ContextMean));
  expectLayout(out, l);
  for (int64_t i : {1, 2, 3, 6}) EXPECT_EQ(row(out.X, i), (std::vector<float>{2.5f, .5f, .5f})) << i;  // A p1
  EXPECT_EQ(row(out.X, 4), (std::vector<float>{float(1.25 / 3), float(6.5 / 3), float(7.0 / 3)}));    // B p1, p2
  // Context C has no perturbed training cells.
  const std::string err = test::errorOf(
      [&] { eval::makeBaseline(train(), like(true), options(eval::BaselineKind::ContextMean)); });
  EXPECT_NE(err.find("no perturbed cells of ct='C'"), std::string::npos) << err;
}

TEST(Baseline, WithoutContextColumnEverythingIsOneContext) {
  eval::BaselineOptions o = options(eval::BaselineKind::ContextMean);
  o.celltypeCol.clear();
  const AnnData out = eval::makeBaseline(train(), like(true), o);
  EXPECT_EQ(row(out.X, 1), (std::vector<float>{.9375f, 1.75f, 1.875f}));  // = cell-mean
  o.kind = eval::BaselineKind::PerturbMean;
  // One context: ctrl = mean of the 3 training controls [2.25 3 2] / 3; delta_p1 = [1.625 1.5 1.5] - ctrl.
  const AnnData pm = eval::makeBaseline(train(), like(true), o);
  const std::vector<float> p1 = row(pm.X, 1);
  EXPECT_FLOAT_EQ(p1[0], 1.625f);
  EXPECT_FLOAT_EQ(p1[1], 1.5f);
  EXPECT_FLOAT_EQ(p1[2], .75f);
}

TEST(Baseline, CountsAreNormalisedLikeCellEval) {
  // Integer-looking inputs go through normalize_total (median library) + log1p, TRAIN and LIKE alike.
  AnnData t = cells({"g0", "g1"}, {{"A", "nt"}, {"A", "p1"}, {"A", "p1"}}, {{2, 2}, {1, 3}, {3, 3}}, "train");
  AnnData l = cells({"g0", "g1"}, {{"A", "nt"}, {"A", "p1"}}, {{1, 1}, {0, 4}}, "like");
  eval::BaselineReport report;
  eval::BaselineOptions o = options(eval::BaselineKind::CellMean);
  const AnnData out = eval::makeBaseline(t, l, o, &report);
  EXPECT_TRUE(report.trainNormalised && report.likeNormalised);
  // TRAIN libraries 4, 4, 6 (median 4): p1 cells [1 3] and [2 2] -> log1p, mean per gene.
  EXPECT_FLOAT_EQ(row(out.X, 1)[0], float((std::log1p(1.0) + std::log1p(2.0)) / 2));
  EXPECT_FLOAT_EQ(row(out.X, 1)[1], float((std::log1p(3.0) + std::log1p(2.0)) / 2));
  // LIKE libraries 2 and 4 (median 3): the control [1 1] becomes log1p(1.5) each.
  EXPECT_FLOAT_EQ(row(out.X, 0)[0], std::log1p(1.5f));
}

TEST(Baseline, Errors) {
  AnnData noControl = like(false);
  noControl.obs.columns[1].second.strings.assign(size_t(noControl.n_obs()), "p1");
  EXPECT_NE(test::errorOf([&] { eval::makeBaseline(train(), noControl, options(eval::BaselineKind::CellMean)); })
                .find("has no control cells ('nt' in obs['target'])"),
            std::string::npos);
  AnnData extraGene = like(false);
  extraGene.var.index[2] = "gX";
  EXPECT_NE(test::errorOf([&] { eval::makeBaseline(train(), extraGene, options(eval::BaselineKind::CellMean)); })
                .find("lacks 1 of the 3 genes of like (like.h5ad), first 'gX'"),
            std::string::npos);
  eval::BaselineOptions o = options(eval::BaselineKind::CellMean);
  o.pertCol = "nope";
  EXPECT_NE(test::errorOf([&] { eval::makeBaseline(train(), like(false), o); }).find("nope"), std::string::npos);
  EXPECT_THROW(eval::parseBaselineKind("median"), std::invalid_argument);
}

// The command writes an h5ad that reads back as the in-memory result, and fails with one line.
TEST(Baseline, CommandLine) {
  test::TempDir dir;
  data::writeH5ad(train(), dir.file("train.h5ad"));
  data::writeH5ad(like(true), dir.file("like.h5ad"));
  const auto ok = test::runBinary("baseline --kind perturb-mean --train '" + dir.file("train.h5ad") + "' --like '" +
                                  dir.file("like.h5ad") + "' --out '" + dir.file("pred.h5ad") +
                                  "' --pert-col target --control-pert nt --celltype-col ct");
  ASSERT_EQ(ok.status, 0) << ok.out;
  const AnnData back = data::readH5ad(dir.file("pred.h5ad"));
  const AnnData want = eval::makeBaseline(train(), like(true), options(eval::BaselineKind::PerturbMean));
  EXPECT_EQ(back.obs.index, want.obs.index);
  EXPECT_EQ(back.X.data, want.X.data);
  EXPECT_EQ(back.X.indices, want.X.indices);
  const auto bad = test::runBinary("baseline --kind context-mean --train '" + dir.file("train.h5ad") + "' --like '" +
                                   dir.file("like.h5ad") + "' --out '" + dir.file("bad.h5ad") +
                                   "' --pert-col target --control-pert nt --celltype-col ct");
  EXPECT_EQ(bad.status, 2);
  EXPECT_EQ(bad.out.rfind("error: ", 0), 0u) << bad.out;
  EXPECT_EQ(bad.out.find('\n'), bad.out.size() - 1) << "not one line: " << bad.out;
  EXPECT_FALSE(std::filesystem::exists(dir.file("bad.h5ad")));
}

}  // namespace
}  // namespace latentcell
