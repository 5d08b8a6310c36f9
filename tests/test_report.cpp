// eval/SvgPlot's ticks and markup, then `latentcell report` through the binary, as a user runs it, on small run directories made here: a
// training log, evaluation tables with known means and a simulated pred/real pair in the layout of
// `latentcell run` (RUN/generate/{pred,real}.h5ad). The page must parse as XML, hold the expected
// figures, show the CSV means, and its delta panels' Pearson r must equal numpy's on the same files
// (tests/python/report_reference.py); bad inputs exit 2 naming what is wrong.
#include "TestUtil.h"

#include "eval/SvgPlot.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>

namespace latentcell {
namespace {

using test::runBinary;
using test::TempDir;
namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string readText(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int64_t count(const std::string& text, const std::string& needle) {
  int64_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The means the report must show: cell-eval's "mean" row as written, distribution.csv's rows
// averaged with NaN skipped (its "(mean)" row holds decoys the report must not read).
const std::map<std::string, double> kCellEvalMean = {{"mse", 0.123456789012345}, {"pearson_delta", 0.5}, {"pr_auc", kNaN}};
const std::map<std::string, double> kDistributionMean = {
    {"w1", (1.5 + 2.25) / 2}, {"w2", (1.75 + 2.5) / 2}, {"mmd2_rbf", (0.125 + 0.0625) / 2},
    {"mmd2_rbf_unbiased", (0.1 + 0.3) / 2}, {"fd", 12.5}};

void writeDistributionCsv(const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream(dir / "distribution.csv") << "perturbation,n_real,n_pred,w1,w2,mmd2_rbf,mmd2_rbf_unbiased,fd\n"
                                             "pert_0,80,80,1.5,1.75,0.125,0.1,12.5\n"
                                             "pert_1,64,64,2.25,2.5,0.0625,0.3,NaN\n"
                                             "(mean),144,144,999.0,999.0,999.0,999.0,999.0\n";
}

// RUN_DIR "run" (a training log, one evaluation with both tables, simulated pred and real cells
// under generate/) and "other" (an evaluation with distribution.csv only, and a reconstruction one).
struct Runs {
  TempDir dir;
  std::string run = dir.file("run"), other = dir.file("other");
  std::string generate = run + "/generate";

  Runs() {
    fs::create_directories(generate);
    std::ofstream log(run + "/metrics.jsonl");
    const double train[] = {5, 4, 3, 2.5, 2.25};
    for (int i = 0; i < 5; ++i)
      log << R"({"cells_per_s":100.0,"epoch":0,"loss":)" << train[i] << R"(,"lr":0.001,"split":"train","step":)"
          << 10 * (i + 1) << "}\n";
    log << R"({"best":true,"loss":3.5,"split":"val","step":25})" << "\n"
        << R"({"best":true,"loss":2.75,"split":"val","step":50})" << "\n";
    fs::create_directories(run + "/eval");
    std::ofstream(run + "/eval/agg_results.csv") << "statistic,mse,pearson_delta,pr_auc\n"
                                                    "count,3.0,3.0,0.0\n"
                                                    "null_count,0.0,0.0,3.0\n"
                                                    "mean,0.123456789012345,0.5,\n"
                                                    "std,0.1,0.2,\n";
    writeDistributionCsv(run + "/eval");
    writeDistributionCsv(other + "/eval");
    fs::create_directories(other + "/recon");  // a stage-1 evaluation: summary.json of --profile reconstruction
    std::ofstream(other + "/recon/summary.json")
        << R"({"profile": "reconstruction", "reconstruction": {"all": {"pcc": 0.25, "mse": 2.5}, "top_k": 100}})";
  }

  // Real and predicted cells: two simulated screens with the same genes and labels (seeds differ).
  void simulate(const std::string& real, const std::string& pred) const {
    for (const auto& [path, seed] : {std::pair{real, 3}, std::pair{pred, 4}}) {
      const auto r = runBinary("simulate --out '" + path + "' --cells 300 --genes 20 --perturbations 3 --seed " +
                               std::to_string(seed));
      ASSERT_EQ(r.status, 0) << r.out;
    }
  }
};

void expectSameNumber(double expected, double actual, const std::string& what) {
  if (std::isnan(expected)) EXPECT_TRUE(std::isnan(actual)) << what << ": " << actual;
  else EXPECT_DOUBLE_EQ(expected, actual) << what;
}

TEST(SvgPlot, NiceTicksCoverTheRangeInEvenNiceSteps) {
  EXPECT_EQ(eval::niceTicks(0, 10, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  for (const auto& [lo, hi] : {std::pair{-3.7, 12.1}, {0.0012, 0.0047}, {-250.0, -3.0}, {1e5, 7.3e6}, {0.9, 1.1}}) {
    const std::vector<double> ticks = eval::niceTicks(lo, hi, 5);
    ASSERT_GE(ticks.size(), 3u) << lo << " " << hi;
    EXPECT_LE(ticks.size(), 11u) << lo << " " << hi;
    const double step = ticks[1] - ticks[0];
    const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    EXPECT_TRUE(std::abs(mantissa - 1) < 1e-6 || std::abs(mantissa - 2) < 1e-6 || std::abs(mantissa - 5) < 1e-6) << step;
    for (size_t i = 0; i < ticks.size(); ++i) {
      EXPECT_GE(ticks[i], lo - 1e-9 * std::abs(lo));
      EXPECT_LE(ticks[i], hi + 1e-9 * std::abs(hi));
      if (i > 0) {
        EXPECT_NEAR(ticks[i] - ticks[i - 1], step, 1e-9 * step);
      }
    }
    EXPECT_LT(ticks.front() - step, lo);  // no multiple of the step in range is left out
    EXPECT_GT(ticks.back() + step, hi);
  }
}

TEST(SvgPlot, MarkupEscapesTextSkipsGapsAndTicksLogAxesAtPowersOfTen) {
  eval::PlotSeries line;
  line.label = "loss <train>";
  line.color = "#1f77b4";
  line.x = {1, 2, 3, 4, 5};
  line.y = {1000, 100, std::nan(""), 10, 1};
  eval::PlotSpec spec;
  spec.title = "a & b";
  spec.xLabel = "step";
  spec.yLabel = "loss";
  spec.logY = true;
  spec.attributes = {{"data-run", "x\"y"}};
  const std::string svg = eval::renderSvgPlot({line}, spec);
  EXPECT_NE(svg.find(">a &amp; b</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss &lt;train&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find("data-run=\"x&quot;y\""), std::string::npos);
  for (const char* tick : {">1</text>", ">10</text>", ">100</text>", ">1000</text>"}) EXPECT_NE(svg.find(tick), std::string::npos) << tick;
  // The NaN splits the line in two pieces: two move-to commands in the data path.
  const size_t path = svg.find("stroke=\"#1f77b4\" stroke-width=\"1.8\"");
  ASSERT_NE(path, std::string::npos);
  const std::string d = svg.substr(path, svg.find("/>", path) - path);
  EXPECT_EQ(count(d, "M"), 2) << d;
  EXPECT_EQ(count(svg, "<svg "), 1);
  EXPECT_EQ(svg.substr(svg.size() - 6), "</svg>");
}

TEST(Report, WritesLabelledFiguresTablesAndSummary) {
  Runs runs;
  runs.simulate(runs.generate + "/real.h5ad", runs.generate + "/pred.h5ad");
  const std::string html = runs.dir.file("out/report.html");
  const auto r = runBinary("report '" + runs.run + "' '" + runs.other + "' --out '" + html + "' --control-pert control");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string page = readText(html);
  // One loss figure, a delta panel per perturbation (3), one PCA figure.
  EXPECT_EQ(count(page, "<svg "), 5);
  EXPECT_EQ(count(page, "data-kind=\"loss\""), 1);
  EXPECT_EQ(count(page, "data-kind=\"delta\""), 3);
  EXPECT_EQ(count(page, "data-kind=\"pca\""), 1);
  // Labelled: axis names and the legends' entries are in the figures.
  for (const char* text : {">training step<", ">train loss<", ">val loss<", ">real Δ mean log1p expression<", "of real variance)<",
                           ">real (300 of 300 cells)<", ">generated (300 of 300 cells)<"})
    EXPECT_NE(page.find(text), std::string::npos) << text;
  // Self-contained: no scripts, and the only URLs are the XHTML and SVG namespace names.
  EXPECT_EQ(count(page, "<script"), 0);
  EXPECT_EQ(count(page, "http"), count(page, "http://www.w3.org/"));

  const std::string md = readText(runs.dir.file("out/report.md"));
  EXPECT_NE(md.find("| run | 50 | 2.25 | 2.75 | 2.75 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| metric | run/eval | other/eval | other/recon |"), std::string::npos) << md;
  EXPECT_NE(md.find("| w1 | 1.875 | 1.875 | – |"), std::string::npos) << md;
  EXPECT_NE(md.find("| mse | 0.1235 | – | – |"), std::string::npos) << md;
  EXPECT_NE(md.find("| mse | – | – | 2.5 |"), std::string::npos) << md;

  // At most --max-perturbations panels.
  const auto few = runBinary("report '" + runs.run + "' --out '" + runs.dir.file("few.html") +
                             "' --control-pert control --max-perturbations 2");
  ASSERT_EQ(few.status, 0) << few.out;
  EXPECT_EQ(count(readText(runs.dir.file("few.html")), "data-kind=\"delta\""), 2);
}

// The page parsed as XML by Python; its numbers against the CSVs and against numpy. The predicted
// file holds log1p values and the real one counts, so both input paths are exercised.
TEST(Report, TakesThePerturbationColumnAndControlFromTheEvaluationsSummary) {
  Runs runs;
  runs.simulate(runs.generate + "/real.h5ad", runs.generate + "/pred.h5ad");
  const std::string html = runs.dir.file("report.html");
  // The simulated control is "control", not the default "non-targeting": without a label the report fails...
  auto r = runBinary("report '" + runs.run + "' --out '" + html + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("no 'non-targeting' cells"), std::string::npos) << r.out;
  // ...until the evaluation it finds records what `latentcell evaluate` was told (as a recipe's does).
  std::ofstream(runs.run + "/eval/summary.json")
      << R"({"profile": "full", "inputs": {"pert_col": "perturbation", "control_pert": "control"}})";
  r = runBinary("report '" + runs.run + "' --out '" + html + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find(" delta panels"), std::string::npos) << r.out;
  EXPECT_NE(readText(html).find("minus that of the 'control'"), std::string::npos);
  // Two evaluations that disagree leave the choice to the user.
  fs::create_directories(runs.run + "/eval2");
  std::ofstream(runs.run + "/eval2/agg_results.csv") << "statistic,mse\nmean,0.5\n";
  std::ofstream(runs.run + "/eval2/summary.json")
      << R"({"profile": "full", "inputs": {"pert_col": "perturbation", "control_pert": "non-targeting"}})";
  r = runBinary("report '" + runs.run + "' --out '" + html + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  r = runBinary("report '" + runs.run + "' --out '" + html + "' --control-pert control");
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST(Report, AgreesWithCsvMeansAndNumpy) {
  LATENTCELL_REQUIRE_PYTHON();
  Runs runs;
  const std::string counts = runs.dir.file("pred-counts.h5ad");
  runs.simulate(runs.generate + "/real.h5ad", counts);
  ASSERT_EQ(test::runPython("tests/python/report_reference.py",
                            "log1p '" + counts + "' '" + runs.generate + "/pred.h5ad'"),
            0);
  const std::string html = runs.dir.file("report.html");
  const auto r = runBinary("report '" + runs.run + "' '" + runs.other + "' --out '" + html + "' --control-pert control");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string json = runs.dir.file("read.json");
  ASSERT_EQ(test::runPython("tests/python/report_reference.py",
                            "read '" + html + "' '" + runs.generate + "' perturbation control '" + json + "'"),
            0)
      << "the page is not well-formed XML, or the reference failed";
  const auto got = nlohmann::json::parse(readText(json));
  EXPECT_EQ(got["svg_kinds"], nlohmann::json({{"loss", 1}, {"delta", 3}, {"pca", 1}}));

  // Table: every metric in each column, values equal to the CSV means; other/eval has no cell-eval cells.
  std::map<std::pair<std::string, std::string>, double> cells;
  for (const auto& c : got["table"]) cells[{c["column"], c["metric"]}] = std::stod(c["value"].get<std::string>());
  const size_t filled = kCellEvalMean.size() + 2 * kDistributionMean.size() + 2, rows = kCellEvalMean.size() + kDistributionMean.size() + 2;
  EXPECT_EQ(cells.size(), filled);
  EXPECT_EQ(got["missing_cells"], int(3 * rows - filled));
  for (const auto& [metric, mean] : kCellEvalMean) expectSameNumber(mean, cells.at({"run/eval", metric}), metric);
  EXPECT_EQ(cells.at({"other/recon", "pcc"}), 0.25);
  EXPECT_EQ(cells.at({"other/recon", "mse"}), 2.5);
  for (const auto& column : {"run/eval", "other/eval"})
    for (const auto& [metric, mean] : kDistributionMean) expectSameNumber(mean, cells.at({column, metric}), metric);

  // PCA: fitted on the real cells as numpy's SVD fits them (shares of the total variance of PC1, PC2).
  const auto& share = got["pca_variance_share"];
  ASSERT_EQ(share["html"].size(), 2u);
  for (int k = 0; k < 2; ++k) EXPECT_NEAR(share["html"][k].get<double>(), share["numpy"][k].get<double>(), 1e-6) << "PC" << k + 1;

  // Delta panels: r as numpy computes it from the same files, and shown in the title.
  ASSERT_EQ(got["panels"].size(), 3u);
  for (const auto& [pert, panel] : got["panels"].items()) {
    const double html_r = panel["html_r"], numpy_r = panel["numpy_r"];
    EXPECT_NEAR(html_r, numpy_r, 1e-5) << pert;
    EXPECT_GT(std::abs(numpy_r), 0.05) << pert << ": the check needs a non-trivial correlation";
    char title[64];
    std::snprintf(title, sizeof title, "%s: r = %.3f", pert.c_str(), html_r);
    EXPECT_EQ(panel["title"], title);
  }
}

TEST(Report, BadInputsExitTwoNamingThem) {
  TempDir dir;
  auto r = runBinary("report '" + dir.file("absent") + "' --out '" + dir.file("r.html") + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("'" + dir.file("absent") + "' does not exist"), std::string::npos) << r.out;

  fs::create_directories(dir.file("empty/sub"));
  r = runBinary("report '" + dir.file("empty") + "' --out '" + dir.file("r.html") + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("'" + dir.file("empty") + "' holds nothing to report"), std::string::npos) << r.out;

  // Searched three levels deep: a log at level 3 is found, one at level 4 is not.
  const std::string log = R"({"step":1,"loss":2.0,"split":"train"})";
  fs::create_directories(dir.file("deep3/a/b/c"));
  std::ofstream(dir.file("deep3/a/b/c/metrics.jsonl")) << log << "\n";
  r = runBinary("report '" + dir.file("deep3") + "' --out '" + dir.file("deep3.html") + "'");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(readText(dir.file("deep3.md")).find("| deep3/a/b/c | 1 | 2 |"), std::string::npos);
  fs::create_directories(dir.file("deep4/a/b/c/d"));
  std::ofstream(dir.file("deep4/a/b/c/d/metrics.jsonl")) << log << "\n";
  r = runBinary("report '" + dir.file("deep4") + "' --out '" + dir.file("r.html") + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("holds nothing to report within 3 levels"), std::string::npos) << r.out;

  fs::create_directories(dir.file("bad"));
  std::ofstream(dir.file("bad/metrics.jsonl")) << log << "\n{not json\n";
  r = runBinary("report '" + dir.file("bad") + "' --out '" + dir.file("r.html") + "'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find(dir.file("bad/metrics.jsonl") + ":2 is not JSON"), std::string::npos) << r.out;

  // pred and real with different genes.
  fs::create_directories(dir.file("pair"));
  ASSERT_EQ(runBinary("simulate --out '" + dir.file("pair/real.h5ad") + "' --cells 50 --genes 20").status, 0);
  ASSERT_EQ(runBinary("simulate --out '" + dir.file("pair/pred.h5ad") + "' --cells 50 --genes 21").status, 0);
  r = runBinary("report '" + dir.file("pair") + "' --out '" + dir.file("r.html") + "' --control-pert control");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("different var_names"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir.file("r.html")));

  // pred.h5ad that is not an h5ad file; then a --pert-col the files lack.
  std::ofstream(dir.file("pair/pred.h5ad")) << "not hdf5\n";
  r = runBinary("report '" + dir.file("pair") + "' --out '" + dir.file("r.html") + "' --control-pert control");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find(dir.file("pair/pred.h5ad") + ": not an HDF5 file"), std::string::npos) << r.out;
  fs::copy_file(dir.file("pair/real.h5ad"), dir.file("pair/pred.h5ad"), fs::copy_options::overwrite_existing);
  r = runBinary("report '" + dir.file("pair") + "' --out '" + dir.file("r.html") + "' --pert-col guide");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("guide"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir.file("r.html")));
}

}  // namespace
}  // namespace latentcell
