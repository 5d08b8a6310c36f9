// eval/ReconstructionSuite and `latentcell evaluate --profile reconstruction`: every metric against an
// independent reference on fixed inputs (tests/python/eval_protocols_reference.py: scipy's nbinom and
// poisson logpmf, pearsonr, mannwhitneyu + false_discovery_control, spearmanr, sklearn's r2_score),
// the three sources of the prediction's scale and dispersion, invariances of a perfect reconstruction,
// and the pairing and contract checks.
#include "TestUtil.h"

#include "data/H5ad.h"
#include "eval/ReconstructionSuite.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace latentcell {
namespace {

const char* kScript = "tests/python/eval_protocols_reference.py";

std::vector<std::vector<std::string>> readCsv(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "missing " << path;
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (!line.empty() && line.back() == ',') f.push_back("");
    rows.push_back(f);
  }
  return rows;
}

// Same header, labels and counts; numbers within `tol` relative (NaN only where the reference has NaN).
void expectSameTable(const std::string& ours, const std::string& ref, double tol, const std::string& label) {
  const auto a = readCsv(ours), b = readCsv(ref);
  ASSERT_EQ(a.size(), b.size()) << label;
  ASSERT_EQ(a[0], b[0]) << label << " header";
  double worst = 0;
  for (size_t r = 1; r < b.size(); ++r) {
    ASSERT_EQ(a[r].size(), b[r].size());
    for (size_t c = 0; c < 3; ++c) EXPECT_EQ(a[r][c], b[r][c]) << label << " row " << r;
    for (size_t c = 3; c < b[r].size(); ++c) {
      const double x = std::stod(a[r][c]), y = std::stod(b[r][c]);
      if (std::isnan(y)) {
        EXPECT_TRUE(std::isnan(x)) << label << " " << b[0][c] << " row " << r << ": " << x << ", want NaN";
        continue;
      }
      const double err = std::abs(x - y) / std::max(std::abs(y), 1e-12);
      worst = std::max(worst, err);
      EXPECT_LE(err, tol) << label << " " << b[0][c] << " " << b[r][1] << ": got " << x << " want " << y;
    }
  }
  std::printf("[%s] %zu rows, worst relative difference %.2e\n", label.c_str(), b.size() - 1, worst);
}

class ReconstructionReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::pythonPath().empty()) return;
    dir_ = new test::TempDir();
    ok_ = test::runPython(kScript, "reconstruction '" + dir_->path().string() + "'") == 0;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    LATENTCELL_REQUIRE_PYTHON();
    ASSERT_TRUE(ok_) << kScript << " failed";
  }
  static std::string file(const std::string& name) { return dir_->file(name); }
  static test::TempDir* dir_;
  static bool ok_;
};
test::TempDir* ReconstructionReference::dir_ = nullptr;
bool ReconstructionReference::ok_ = false;

eval::ReconstructionOptions options() {
  eval::ReconstructionOptions o;
  o.pertCol = "target";
  o.controlPert = "non-targeting";
  o.celltypeCol = "celltype";
  return o;
}

// NB error: scVI's eps = 1e-8 inside the logs against scipy's exact logpmf (means >= 0.05) moves the
// per-cell sums by < 1e-7 relative; every other column agrees to rounding.
TEST_F(ReconstructionReference, ThetaFromVarMatchesScipy) {
  const auto report = eval::evaluateReconstruction(data::readH5ad(file("rec_real.h5ad")),
                                                   data::readH5ad(file("rec_pred.h5ad")), options());
  EXPECT_EQ(report.thetaSource, "var['nb_theta']");
  EXPECT_EQ(report.predSpace, "counts");
  EXPECT_EQ(report.topK, 100);
  eval::writeReconstructionCsv(report, true, file("ours_theta.csv"));
  expectSameTable(file("ours_theta.csv"), file("rec_theta.csv"), 1e-6, "theta from var");
}

TEST_F(ReconstructionReference, MomentThetaMatchesNumpy) {
  const auto report = eval::evaluateReconstruction(data::readH5ad(file("rec_real.h5ad")),
                                                   data::readH5ad(file("rec_pred_moments.h5ad")), options());
  EXPECT_EQ(report.thetaSource, "moments");
  eval::writeReconstructionCsv(report, true, file("ours_moments.csv"));
  expectSameTable(file("ours_moments.csv"), file("rec_moments.csv"), 1e-6, "theta by moments");
}

// Through the binary: uns['reconstruction_space'] = "log1p" is honoured (no NB error).
TEST_F(ReconstructionReference, Log1pPredictionThroughTheCommand) {
  const auto run = test::runBinary("evaluate --profile reconstruction --real '" + file("rec_real.h5ad") +
                                   "' --pred '" + file("rec_pred_log.h5ad") +
                                   "' --pert-col target --control-pert non-targeting --celltype-col celltype "
                                   "--device cpu --outdir '" + file("cli") + "'");
  ASSERT_EQ(run.status, 0) << run.out;
  expectSameTable(file("cli/reconstruction.csv"), file("rec_log.csv"), 1e-9, "log1p via cli");
  std::ifstream summary(file("cli/summary.json"));
  std::stringstream s;
  s << summary.rdbuf();
  EXPECT_NE(s.str().find("\"pred_space\": \"log1p\""), std::string::npos) << s.str();
  EXPECT_NE(s.str().find("\"theta_source\": \"none\""), std::string::npos);
}

TEST_F(ReconstructionReference, UnpairedCellsFailWithOneLine) {
  const auto run = test::runBinary("evaluate --profile reconstruction --real '" + file("rec_real.h5ad") +
                                   "' --pred '" + file("rec_pred_shuffled.h5ad") +
                                   "' --pert-col target --device cpu --outdir '" + file("bad") + "'");
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.out.find("not paired by cell"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("('cell0' vs 'cell1')"), std::string::npos) << run.out;
  EXPECT_EQ(run.out.find('\n'), run.out.size() - 1) << "not one line: " << run.out;
}

data::Column labels(const std::vector<std::string>& v) {
  data::Column c;
  c.kind = data::Column::Kind::String;
  c.strings = v;
  return c;
}

// Two conditions of 3 cells, 4 genes; counts in real, `pred` as given.
std::pair<data::AnnData, data::AnnData> small(const std::vector<std::vector<float>>& pred) {
  data::AnnData real;
  real.X = test::csrFromDense({{3, 0, 1, 2}, {5, 1, 0, 2}, {2, 2, 1, 0}, {9, 0, 4, 1}, {7, 1, 3, 3}, {8, 2, 5, 0}});
  real.var.index = {"a", "b", "c", "d"};
  real.obs.index = {"c0", "c1", "c2", "c3", "c4", "c5"};
  real.obs.columns = {{"target", labels({"ctrl", "ctrl", "ctrl", "p", "p", "p"})}};
  real.source = "real.h5ad";
  data::AnnData p = real;
  p.X = test::csrFromDense(pred);
  p.source = "pred.h5ad";
  return {real, p};
}

TEST(Reconstruction, PerfectReconstructionScoresPerfectly) {
  auto [real, pred] = small({{3, 0, 1, 2}, {5, 1, 0, 2}, {2, 2, 1, 0}, {9, 0, 4, 1}, {7, 1, 3, 3}, {8, 2, 5, 0}});
  eval::ReconstructionOptions o;
  o.pertCol = "target";
  o.controlPert = "ctrl";
  const auto r = eval::evaluateReconstruction(real, pred, o);
  EXPECT_EQ(r.topK, 4);  // min(100, genes)
  for (const auto& row : r.rows) {
    EXPECT_DOUBLE_EQ(row.mse, 0.0);
    EXPECT_NEAR(row.pcc, 1.0, 1e-12);
    EXPECT_DOUBLE_EQ(row.r2Sum, 1.0);
  }
  EXPECT_DOUBLE_EQ(r.rows[1].degRecall, 1.0);
  EXPECT_NEAR(r.rows[1].logfcSpearman, 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(r.rows[0].degRecall));  // the control has no DE against itself
  // mu = x, theta by moments: sum((x - mu)^2 - mu) < 0, so the Poisson limit; NLL = -sum log Poisson(x | x).
  double nll = 0;
  for (float x : real.X.data) nll -= x * std::log(double(x) + 1e-8) - x - std::lgamma(double(x) + 1.0);
  EXPECT_NEAR(r.all.nbError, nll / 6.0, 1e-9);
}

TEST(Reconstruction, ContractChecks) {
  auto [real, pred] = small({{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}});
  eval::ReconstructionOptions o;
  o.pertCol = "target";
  o.controlPert = "ctrl";
  data::Column theta;
  theta.kind = data::Column::Kind::Float;
  theta.floats = {1.0, 2.0, 0.0, 1.0};
  pred.var.columns = {{"nb_theta", theta}};
  EXPECT_NE(test::errorOf([&] { eval::evaluateReconstruction(real, pred, o); })
                .find("var['nb_theta'] of gene 'c' is 0.000000; inverse dispersions must be > 0"),
            std::string::npos);
  pred.var.columns.clear();
  pred.uns_strings["reconstruction_space"] = "logcounts";
  EXPECT_NE(test::errorOf([&] { eval::evaluateReconstruction(real, pred, o); }).find("use 'counts' or 'log1p'"),
            std::string::npos);
  pred.uns_strings.clear();
  data::AnnData logReal = real;
  for (float& v : logReal.X.data) v = std::log1p(v);
  EXPECT_NE(test::errorOf([&] { eval::evaluateReconstruction(logReal, pred, o); }).find("is not raw counts"),
            std::string::npos);
  data::AnnData negative = pred;
  negative.X.data[3] = -1.0f;
  EXPECT_NE(test::errorOf([&] { eval::evaluateReconstruction(real, negative, o); })
                .find("a count-space reconstruction must be finite and >= 0"),
            std::string::npos);
  negative.uns_strings["reconstruction_space"] = "log1p";  // PCA's affine decoder goes below 0: scored as is
  EXPECT_EQ(test::errorOf([&] { eval::evaluateReconstruction(real, negative, o); }), "(no error)");
  negative.X.data[3] = std::numeric_limits<float>::infinity();
  EXPECT_NE(test::errorOf([&] { eval::evaluateReconstruction(real, negative, o); })
                .find("a log1p-space reconstruction must be finite"),
            std::string::npos);
  data::AnnData otherGenes = pred;
  otherGenes.var.index[1] = "z";
  EXPECT_NE(test::errorOf([&] { eval::evaluateReconstruction(real, otherGenes, o); })
                .find("var_names differ (4 vs 4 genes, first difference at gene 1)"),
            std::string::npos);
}

}  // namespace
}  // namespace latentcell
