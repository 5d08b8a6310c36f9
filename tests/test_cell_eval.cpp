// eval/CellEvalSuite and `latentcell evaluate` against cell-eval 0.8.2's own CLI on the same files
// (tests/python/cell_eval_reference.py makes them and runs `cell-eval run`): DE-derived counts must be
// equal, every other per-perturbation value within 1e-5 in >= 99.5% of cells, aggregate means within
// 1e-4. The input checks must fail with one line. A run on the real Papalexi screen is added when
// ../shared/data has it.
#include "TestUtil.h"

#include "data/H5ad.h"
#include "eval/CellEvalSuite.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentcell {
namespace {

const char* kScript = "tests/python/cell_eval_reference.py";

struct Csv {
  std::vector<std::string> header;
  std::map<std::string, std::vector<std::optional<double>>> rows;  // first field -> values
};

Csv readCsv(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "missing " << path;
  Csv csv;
  std::string line;
  bool first = true;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (!line.empty() && line.back() == ',') f.push_back("");
    if (first) {
      csv.header = f, first = false;
      continue;
    }
    auto& r = csv.rows[f[0]];
    for (size_t i = 1; i < f.size(); ++i)
      r.push_back(f[i].empty() ? std::nullopt : std::optional<double>(std::stod(f[i])));
  }
  return csv;
}

bool same(const std::optional<double>& a, const std::optional<double>& b, double tol) {
  if (!a || !b) return !a && !b;
  if (std::isnan(*a) || std::isnan(*b)) return std::isnan(*a) && std::isnan(*b);
  return std::abs(*a - *b) <= tol;
}

// Compares our results/agg CSVs with cell-eval's in `ref`; prints the agreement. With
// `undefinedEdistance`, pearson_edistance must be NaN here (a side of the correlation is constant up to
// rounding, see CellEvalSuite.cpp) and cell-eval's rounding-noise value is not compared.
void compareWithCellEval(const std::string& ours, const std::string& ref, const std::string& label,
                         bool undefinedEdistance = false) {
  const Csv a = readCsv(ours + "/results.csv"), b = readCsv(ref + "/results.csv");
  ASSERT_EQ(a.header, b.header) << "results.csv columns differ";
  ASSERT_EQ(a.rows.size(), b.rows.size());
  int cells = 0, agree = 0;
  double worst = 0;
  std::string worstWhere;
  for (const auto& [pert, rb] : b.rows) {
    ASSERT_TRUE(a.rows.count(pert)) << "perturbation " << pert << " missing";
    const auto& ra = a.rows.at(pert);
    for (size_t c = 0; c < rb.size(); ++c) {
      const std::string& metric = b.header[c + 1];
      if (metric.rfind("de_nsig_counts", 0) == 0) {
        EXPECT_TRUE(same(ra[c], rb[c], 0.0)) << metric << " " << pert;
        continue;
      }
      if (undefinedEdistance && metric == "pearson_edistance") {
        EXPECT_TRUE(ra[c] && std::isnan(*ra[c])) << "pearson_edistance should be NaN for " << pert;
        continue;
      }
      ++cells;
      agree += same(ra[c], rb[c], 1e-5);
      if (ra[c] && rb[c] && std::isfinite(*ra[c]) && std::isfinite(*rb[c]) && std::abs(*ra[c] - *rb[c]) > worst)
        worst = std::abs(*ra[c] - *rb[c]), worstWhere = metric + " " + pert;
      if (!same(ra[c], rb[c], 1e-5))
        std::printf("[%s] differs: %s %s ours %s cell-eval %s\n", label.c_str(), metric.c_str(), pert.c_str(),
                    ra[c] ? std::to_string(*ra[c]).c_str() : "null", rb[c] ? std::to_string(*rb[c]).c_str() : "null");
    }
  }
  const double fraction = double(agree) / double(cells);
  std::printf("[%s] results.csv: %d/%d values within 1e-5 (%.4f); largest finite difference %.3g (%s)\n",
              label.c_str(), agree, cells, fraction, worst, worstWhere.c_str());
  EXPECT_GE(fraction, 0.995);

  const Csv aggA = readCsv(ours + "/agg_results.csv"), aggB = readCsv(ref + "/agg_results.csv");
  ASSERT_EQ(aggA.header, aggB.header);
  int means = 0, meansAgree = 0;
  for (size_t c = 0; c < aggB.rows.at("mean").size(); ++c) {
    if (undefinedEdistance && aggB.header[c + 1] == "pearson_edistance") continue;
    ++means;
    const bool ok = same(aggA.rows.at("mean")[c], aggB.rows.at("mean")[c], 1e-4);
    meansAgree += ok;
    EXPECT_TRUE(ok) << "agg mean of " << aggB.header[c + 1];
    EXPECT_TRUE(same(aggA.rows.at("count")[c], aggB.rows.at("count")[c], 0.0));
    EXPECT_TRUE(same(aggA.rows.at("null_count")[c], aggB.rows.at("null_count")[c], 0.0));
  }
  std::printf("[%s] agg_results.csv: %d/%d means within 1e-4\n", label.c_str(), meansAgree, means);

  // The DE tables: same rows and the same significance calls (fdr < 0.05, which drive every DE
  // metric). fdr itself agrees to 1e-9 except where log1p differs: for count inputs numpy's float32
  // log1p (its SIMD code) and glibc's log1pf differ by an ulp in ~9% of values, which can reorder
  // tied cells in the Mann-Whitney ranks (statistic +-0.5) and move fdr by ~1e-3.
  for (const char* name : {"real_de.csv", "pred_de.csv"}) {
    std::ifstream fa(ours + "/" + name), fb(ref + "/" + name);
    std::string la, lb;
    std::getline(fa, la), std::getline(fb, lb);
    EXPECT_EQ(la, lb) << name << " header";
    int rows = 0, fdrAgree = 0, callsAgree = 0;
    while (std::getline(fb, lb)) {
      ASSERT_TRUE(std::getline(fa, la)) << name << " has fewer rows";
      auto fields = [](const std::string& s) {
        std::vector<std::string> f;
        std::stringstream ss(s);
        for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
        return f;
      };
      const auto x = fields(la), y = fields(lb);
      ASSERT_EQ(x[0] + x[1], y[0] + y[1]) << name << " row order";
      ++rows;
      const double fa = std::stod(x[10]), fb = std::stod(y[10]);
      fdrAgree += std::abs(fa - fb) <= 1e-9;
      callsAgree += (float(fa) < 0.05f) == (float(fb) < 0.05f);
    }
    std::printf("[%s] %s: %d rows, fdr within 1e-9 in %d, same significance call in %d\n", label.c_str(), name,
                rows, fdrAgree, callsAgree);
    EXPECT_EQ(callsAgree, rows);
    EXPECT_GE(fdrAgree, 0.95 * rows);
  }
}

eval::CellEvalReport evaluateFiles(const std::string& real, const std::string& pred, const std::string& pertCol,
                                   const std::string& control, const std::string& outdir) {
  eval::CellEvalOptions o;
  o.controlPert = control;
  const auto report = eval::evaluateCellEval(eval::cellEvalData(data::readH5ad(real), pertCol),
                                             eval::cellEvalData(data::readH5ad(pred), pertCol), o);
  std::filesystem::create_directories(outdir);
  eval::writeMetricCsv(report.results, outdir + "/results.csv");
  eval::writeMetricCsv(eval::describeMetrics(report.results), outdir + "/agg_results.csv");
  eval::writeDeCsv(*report.realDe, outdir + "/real_de.csv");
  eval::writeDeCsv(*report.predDe, outdir + "/pred_de.csv");
  return report;
}

// One simulated screen and cell-eval's results on it, shared by the tests (cell-eval takes ~15 s).
class CellEvalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::pythonPath().empty()) return;
    dir_ = new test::TempDir();
    ok_ = test::runPython(kScript, "make '" + dir_->path().string() + "'") == 0 &&
          test::runPython(kScript, "run '" + dir_->file("real.h5ad") + "' '" + dir_->file("pred.h5ad") + "' '" +
                                       dir_->file("ref") + "'") == 0;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    LATENTCELL_REQUIRE_PYTHON();
    ASSERT_TRUE(ok_) << "tests/python/cell_eval_reference.py failed (is cell-eval installed in the env?)";
  }
  static test::TempDir* dir_;
  static bool ok_;
};
test::TempDir* CellEvalTest::dir_ = nullptr;
bool CellEvalTest::ok_ = false;

TEST_F(CellEvalTest, MatchesCellEvalCli) {
  const auto report = evaluateFiles(dir_->file("real.h5ad"), dir_->file("pred.h5ad"), "target", "non-targeting",
                                    dir_->file("ours"));
  EXPECT_TRUE(report.realNormalised && report.predNormalised);  // integer counts are normalised
  EXPECT_EQ(report.omitted, std::vector<std::string>{"clustering_agreement"});
  compareWithCellEval(dir_->file("ours"), dir_->file("ref"), "simulated");
}

TEST_F(CellEvalTest, InputChecksFailWithOneLine) {
  struct Case {
    std::string pred, control, expect;
  };
  const std::vector<Case> cases = {{"bad_var.h5ad", "non-targeting", "Gene names order mismatch"},
                                   {"bad_perts.h5ad", "non-targeting", "Perturbation mismatch"},
                                   {"pred.h5ad", "no-such-control", "Control perturbation (no-such-control) not found"},
                                   {"bad_negative.h5ad", "non-targeting", "is negative"},
                                   {"bad_scale.h5ad", "non-targeting", "exceeds log1p threshold"}};
  for (const auto& c : cases) {
    try {
      evaluateFiles(dir_->file("real.h5ad"), dir_->file(c.pred), "target", c.control, dir_->file("err"));
      ADD_FAILURE() << c.pred << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    }
  }
}

// The same checks through the binary: non-zero exit and one line on stderr.
TEST_F(CellEvalTest, CommandLine) {
  const std::string bin = LATENTCELL_BINARY;
  auto run = [&](const std::string& pred, const std::string& control, const std::string& out,
                 const std::string& extra = "") {
    const std::string cmd = "'" + bin + "' evaluate --real '" + dir_->file("real.h5ad") + "' --pred '" +
                            dir_->file(pred) + "' --pert-col target --control-pert '" + control + "' --outdir '" +
                            dir_->file(out) + "' --device cpu " + extra + " > '" + dir_->file("stdout") + "' 2> '" +
                            dir_->file("stderr") + "'";
    return std::system(cmd.c_str());
  };
  ASSERT_EQ(run("pred.h5ad", "non-targeting", "cli"), 0);
  compareWithCellEval(dir_->file("cli"), dir_->file("ref"), "cli");
  EXPECT_TRUE(std::filesystem::exists(dir_->file("cli/summary.json")));
  EXPECT_TRUE(std::filesystem::exists(dir_->file("cli/distribution.csv")));
  // --no-distribution: exactly cell-eval's files.
  ASSERT_EQ(run("pred.h5ad", "non-targeting", "cli_cell_eval_only", "--no-distribution"), 0);
  compareWithCellEval(dir_->file("cli_cell_eval_only"), dir_->file("ref"), "cli --no-distribution");
  EXPECT_FALSE(std::filesystem::exists(dir_->file("cli_cell_eval_only/distribution.csv")));
  for (const auto& [pred, control] : std::vector<std::pair<std::string, std::string>>{
           {"bad_var.h5ad", "non-targeting"}, {"bad_perts.h5ad", "non-targeting"},
           {"pred.h5ad", "no-such-control"}, {"bad_negative.h5ad", "non-targeting"},
           {"bad_scale.h5ad", "non-targeting"}}) {
    const int status = run(pred, control, "cli_err");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << pred << ": input errors exit with 2";
    std::ifstream err(dir_->file("stderr"));
    std::string first, second;
    std::getline(err, first);
    EXPECT_EQ(first.rfind("error: ", 0), 0u) << first;
    EXPECT_FALSE(std::getline(err, second)) << "more than one line: " << second;
  }
}

// Acceptance 1 with predictions from a baseline: `latentcell baseline` writes them from train.h5ad for
// the cells of real.h5ad, cell-eval accepts the file, and both evaluators agree on it. cell-mean makes
// every perturbation's prediction identical (ties everywhere in the discrimination ranks and DE, and
// an undefined pearson_edistance); perturb-mean gives each perturbation its own shift.
TEST_F(CellEvalTest, MatchesCellEvalCliOnBaselines) {
  for (const std::string kind : {"cell-mean", "perturb-mean"}) {
    SCOPED_TRACE(kind);
    const std::string pred = dir_->file(kind + ".h5ad");
    const auto made = test::runBinary("baseline --kind " + kind + " --train '" + dir_->file("train.h5ad") +
                                      "' --like '" + dir_->file("real.h5ad") + "' --out '" + pred +
                                      "' --pert-col target --control-pert non-targeting");
    ASSERT_EQ(made.status, 0) << made.out;
    ASSERT_EQ(test::runPython(kScript, "run '" + dir_->file("real.h5ad") + "' '" + pred + "' '" +
                                           dir_->file(kind + "_ref") + "'"),
              0)
        << "cell-eval rejected the " << kind << " baseline";
    const auto report = evaluateFiles(dir_->file("real.h5ad"), pred, "target", "non-targeting", dir_->file(kind));
    EXPECT_TRUE(report.realNormalised);
    EXPECT_FALSE(report.predNormalised);  // baselines are written in log1p space
    compareWithCellEval(dir_->file(kind), dir_->file(kind + "_ref"), kind, kind == "cell-mean");
  }
}

// pdex writes a file's DE targets in the order of the label column's categories (sorted only when
// the column is not categorical); the metrics do not depend on it.
TEST(CellEvalSuite, DeTablesFollowCategoryOrder) {
  eval::CellEvalData real;
  real.x = test::csrFromDense({{1, 0, 3}, {2, 1, 0}, {0, 4, 1}, {5, 0, 0}, {1, 2, 2}, {3, 3, 1}});
  real.genes = {"a", "b", "c"};
  real.perturbations = {"ctrl", "ctrl", "p10", "p10", "p2", "p2"};
  real.categories = {"p2", "ctrl", "p10"};
  real.source = "real.h5ad";
  eval::CellEvalData pred = real;
  pred.categories.clear();  // not categorical: sorted
  eval::CellEvalOptions o;
  o.controlPert = "ctrl";
  const auto report = eval::evaluateCellEval(real, pred, o);
  EXPECT_EQ(report.realDe->targets, (std::vector<std::string>{"p10", "p2"}));  // computed sorted
  EXPECT_EQ(report.realDe->rowOrder, (std::vector<int64_t>{1, 0}));            // written p2, p10
  EXPECT_EQ(report.predDe->rowOrder, (std::vector<int64_t>{0, 1}));
  test::TempDir dir;
  eval::writeDeCsv(*report.realDe, dir.file("real_de.csv"));
  std::ifstream in(dir.file("real_de.csv"));
  std::string header, first;
  std::getline(in, header), std::getline(in, first);
  EXPECT_EQ(first.rfind("p2,a,", 0), 0u) << first;
}

TEST(CellEvalPapalexi, MatchesCellEvalCli) {
  LATENTCELL_REQUIRE_PYTHON();
  const std::string screen = test::sourcePath("../shared/data/papalexi2021_thp1_eccite_299genes.h5ad");
  if (!std::filesystem::exists(screen)) GTEST_SKIP() << "../shared/data has no Papalexi screen";
  test::TempDir dir;
  ASSERT_EQ(test::runPython(kScript, "papalexi '" + screen + "' '" + dir.path().string() +
                                         "' perturbation non-targeting"), 0);
  const std::string real = dir.file("real.h5ad"), pred = dir.file("pred.h5ad");
  ASSERT_EQ(test::runPython(kScript, "run '" + real + "' '" + pred + "' '" + dir.file("ref") +
                                         "' perturbation non-targeting"), 0);
  evaluateFiles(real, pred, "perturbation", "non-targeting", dir.file("ours"));
  compareWithCellEval(dir.file("ours"), dir.file("ref"), "papalexi");
}

}  // namespace
}  // namespace latentcell
