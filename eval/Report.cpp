// The run report (see Report.h). Three readers turn files into small host tables (loss curves,
// metric columns, prediction figures); two writers lay the same tables out as HTML and Markdown.
// Figures are eval/SvgPlot specs. Numbers the tests read back are also written at full precision in
// data-* attributes (data-value on table cells, data-pearson-r on delta panels), since the visible
// text is rounded to four significant digits.
#include "eval/Report.h"

#include "data/H5ad.h"
#include "data/Preprocess.h"
#include "eval/DistributionMetrics.h"
#include "eval/DistributionSuite.h"
#include "eval/SvgPlot.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

namespace latentcell::eval {
namespace {

namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};

std::string fixed(double v, const char* format) {
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}
std::string shortNumber(double v) { return fixed(v, "%.4g"); }
std::string exactNumber(double v) { return fixed(v, "%.17g"); }

// ---- training logs ---------------------------------------------------------------------------

struct LossCurve {
  std::string label;
  std::map<std::string, std::vector<std::pair<double, double>>> splits;  // split -> (step, loss), in file order
};

LossCurve readLossCurve(const ReportItem& item) {
  const fs::path path = item.dir / "metrics.jsonl";
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("report: cannot read " + path.string() + ": check its permissions");
  LossCurve curve{item.label, {}};
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("report: " + path.string() + ":" + std::to_string(number) +
                                  " is not JSON (" + e.what() + "); metrics.jsonl holds one JSON object a line");
    }
    if (!record.is_object() || !record.contains("step") || !record.contains("loss")) continue;
    if (!record["step"].is_number() || !record["loss"].is_number()) continue;
    const std::string split = record.contains("split") && record["split"].is_string() ? record["split"].get<std::string>() : "train";
    curve.splits[split].emplace_back(record["step"].get<double>(), record["loss"].get<double>());
  }
  return curve;
}

// ---- evaluation tables -----------------------------------------------------------------------

struct MetricValue {
  std::string group, name;
  double value = kNaN;
};
struct MetricColumn {
  std::string label;
  std::vector<MetricValue> values;
};

// One CSV line split into fields, with polars' quoting ("a,b" and "" inside quotes).
std::vector<std::string> csvFields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') fields.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else fields.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  return fields;
}

struct Csv {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

Csv readCsv(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("report: cannot read " + path.string() + ": check its permissions");
  Csv csv;
  std::string line;
  if (!std::getline(in, line)) throw std::invalid_argument("report: " + path.string() + " is empty; rerun the evaluation");
  csv.header = csvFields(line);
  for (int64_t number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    csv.rows.push_back(csvFields(line));
    if (csv.rows.back().size() != csv.header.size())
      throw std::invalid_argument("report: " + path.string() + ":" + std::to_string(number) + " has " +
                                  std::to_string(csv.rows.back().size()) + " fields, the header " +
                                  std::to_string(csv.header.size()) + "; the file is damaged, rerun the evaluation");
  }
  return csv;
}

// A CSV number as polars writes it: shortest text, "NaN", "inf", or empty for null (NaN here).
double csvValue(const std::string& text, const fs::path& path) {
  if (text.empty() || text == "NaN" || text == "nan" || text == "null") return kNaN;
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  if (text == "inf") return INFINITY;
  if (text == "-inf") return -INFINITY;
  throw std::invalid_argument("report: " + path.string() + " has '" + text + "' where a number belongs; rerun the evaluation");
}

const char* const kCellEvalGroup = "cell-eval (agg_results.csv, mean over perturbations)";
const char* const kDistributionGroup = "distribution (distribution.csv, mean over perturbations)";
const char* const kReconstructionGroup = "reconstruction (summary.json, all cells)";

MetricColumn readEvaluation(const ReportItem& item) {
  MetricColumn column{item.label, {}};
  const fs::path agg = item.dir / "agg_results.csv";
  if (fs::exists(agg)) {
    const Csv csv = readCsv(agg);
    const auto row = std::find_if(csv.rows.begin(), csv.rows.end(), [](const auto& r) { return r[0] == "mean"; });
    if (row == csv.rows.end())
      throw std::invalid_argument("report: " + agg.string() + " has no 'mean' row; is it cell-eval's agg_results.csv?");
    for (size_t c = 1; c < csv.header.size(); ++c)
      column.values.push_back({kCellEvalGroup, csv.header[c], csvValue((*row)[c], agg)});
  }
  const fs::path dist = item.dir / "distribution.csv";
  if (fs::exists(dist)) {
    const Csv csv = readCsv(dist);
    const auto pert = std::find(csv.header.begin(), csv.header.end(), "perturbation");
    if (pert == csv.header.end())
      throw std::invalid_argument("report: " + dist.string() + " has no 'perturbation' column; is it `evaluate`'s distribution.csv?");
    const size_t pertIndex = size_t(pert - csv.header.begin());
    for (size_t c = pertIndex + 1; c < csv.header.size(); ++c) {
      if (csv.header[c] == "n_real" || csv.header[c] == "n_pred") continue;
      double sum = 0;
      int64_t n = 0;
      for (const auto& r : csv.rows) {
        if (r[pertIndex] == "(mean)") continue;
        const double v = csvValue(r[c], dist);
        if (!std::isnan(v)) sum += v, ++n;
      }
      column.values.push_back({kDistributionGroup, csv.header[c], n ? sum / double(n) : kNaN});
    }
  }
  const fs::path summary = item.dir / "summary.json";
  if (fs::exists(summary)) {
    std::ifstream in(summary);
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("report: cannot read " + summary.string() + " as JSON (" + e.what() + ")");
    }
    if (json.contains("reconstruction") && json["reconstruction"].contains("all"))
      for (const auto& [name, value] : json["reconstruction"]["all"].items())
        column.values.push_back({kReconstructionGroup, name, value.is_number() ? value.get<double>() : kNaN});
  }
  return column;
}

bool isEvaluationDir(const fs::path& dir) {
  if (fs::exists(dir / "agg_results.csv") || fs::exists(dir / "distribution.csv")) return true;
  const fs::path summary = dir / "summary.json";
  if (!fs::exists(summary)) return false;
  std::ifstream in(summary);
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return json.is_object() && json.contains("reconstruction");
}

// ---- predictions -------------------------------------------------------------------------------

struct DeltaPanel {
  std::string perturbation;
  int64_t realCells = 0, predCells = 0;
  std::vector<double> real, pred;  // [genes] mean minus control mean
  double pearson = kNaN;
};

struct PredictionFigures {
  std::string label;
  int64_t genes = 0, perturbations = 0;  // perturbations with cells on both sides
  bool realNormalised = false, predNormalised = false, predControlFromReal = false;
  std::vector<DeltaPanel> panels;
  // PCA: subsampled cells' first two components.
  bool pca = false;
  std::vector<double> realPc1, realPc2, predPc1, predPc2;
  int64_t realCells = 0, predCells = 0;
  double varianceShare[2] = {kNaN, kNaN};
};

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = double(a.size());
  if (a.size() < 2) return kNaN;
  const double ma = std::accumulate(a.begin(), a.end(), 0.0) / n, mb = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : kNaN;
}

// Per label: its cells and its per-gene mean, in one pass over the CSR.
struct GroupMeans {
  std::map<std::string, int64_t> cells;
  std::map<std::string, std::vector<double>> mean;  // [genes]
};

GroupMeans groupMeans(const data::CsrMatrix& x, const data::Column& labels) {
  std::map<std::string, int> index;
  std::vector<std::string> names;
  std::vector<int> rowGroup(size_t(x.rows));
  for (int64_t r = 0; r < x.rows; ++r) {
    const auto [it, added] = index.emplace(labels.text(r), int(names.size()));
    if (added) names.push_back(it->first);
    rowGroup[size_t(r)] = it->second;
  }
  std::vector<std::vector<double>> sums(names.size(), std::vector<double>(size_t(x.cols), 0.0));
  std::vector<int64_t> counts(names.size(), 0);
  for (int64_t r = 0; r < x.rows; ++r) {
    std::vector<double>& sum = sums[size_t(rowGroup[size_t(r)])];
    ++counts[size_t(rowGroup[size_t(r)])];
    for (int64_t k = x.indptr[size_t(r)]; k < x.indptr[size_t(r) + 1]; ++k) sum[size_t(x.indices[size_t(k)])] += x.data[size_t(k)];
  }
  GroupMeans g;
  for (size_t i = 0; i < names.size(); ++i) {
    for (double& v : sums[i]) v /= double(counts[i]);
    g.cells[names[i]] = counts[i];
    g.mean[names[i]] = std::move(sums[i]);
  }
  return g;
}

// At most `cap` of rows 0..n-1, a seeded random subset in row order.
std::vector<int64_t> subsampleRows(int64_t n, int64_t cap, uint64_t seed) {
  std::vector<int64_t> rows(static_cast<size_t>(n));
  std::iota(rows.begin(), rows.end(), 0);
  if (cap <= 0 || n <= cap) return rows;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < cap; ++i) std::swap(rows[size_t(i)], rows[size_t(i + int64_t(rng() % uint64_t(n - i)))]);
  rows.resize(size_t(cap));
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Sum over genes of the real cells' variance (ddof 1): the denominator of a component's share.
double totalVariance(const data::CsrMatrix& x) {
  std::vector<double> sum(size_t(x.cols), 0.0), squares(size_t(x.cols), 0.0);
  for (int64_t k = 0; k < x.nnz(); ++k) {
    const double v = x.data[size_t(k)];
    sum[size_t(x.indices[size_t(k)])] += v;
    squares[size_t(x.indices[size_t(k)])] += v * v;
  }
  double total = 0;
  for (int64_t g = 0; g < x.cols; ++g)
    total += (squares[size_t(g)] - sum[size_t(g)] * sum[size_t(g)] / double(x.rows)) / double(x.rows - 1);
  return total;
}

PredictionFigures readPredictions(const ReportItem& item, const ReportOptions& o) {
  const std::string realPath = (item.dir / "real.h5ad").string(), predPath = (item.dir / "pred.h5ad").string();
  // A file that cannot be read as h5ad is a bad input (exit 2), whatever the reader's error type.
  auto read = [](const std::string& path) {
    try {
      return data::readH5ad(path);
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string("report: ") + e.what());
    }
  };
  data::AnnData real = read(realPath), pred = read(predPath);
  if (real.var.index != pred.var.index)
    throw std::invalid_argument("report: " + predPath + " and " + realPath + " have different var_names (" +
                                std::to_string(pred.n_vars()) + " vs " + std::to_string(real.n_vars()) +
                                " genes); write them with `latentcell generate --out pred.h5ad --real-out real.h5ad`");
  const data::Column& realLabels = real.obsColumn(o.pertCol);
  const data::Column& predLabels = pred.obsColumn(o.pertCol);
  PredictionFigures f;
  f.label = item.label;
  f.genes = real.n_vars();
  f.realNormalised = toDistributionLogSpace(real.X, o.targetSum, "real", realPath);
  f.predNormalised = toDistributionLogSpace(pred.X, o.targetSum, "pred", predPath);

  // Deltas from control.
  const GroupMeans realMeans = groupMeans(real.X, realLabels), predMeans = groupMeans(pred.X, predLabels);
  if (!realMeans.mean.count(o.controlPert))
    throw std::invalid_argument("report: " + realPath + " has no '" + o.controlPert + "' cells in obs '" + o.pertCol +
                                "'; name the control label with --control-pert");
  const std::vector<double>& realControl = realMeans.mean.at(o.controlPert);
  f.predControlFromReal = !predMeans.mean.count(o.controlPert);
  const std::vector<double>& predControl = f.predControlFromReal ? realControl : predMeans.mean.at(o.controlPert);
  std::vector<std::string> perturbations;
  for (const auto& [label, cells] : realMeans.cells)
    if (label != o.controlPert && predMeans.cells.count(label)) perturbations.push_back(label);
  f.perturbations = int64_t(perturbations.size());
  // The perturbations with the most real cells (the best-measured deltas), ties by name.
  std::stable_sort(perturbations.begin(), perturbations.end(),
                   [&](const std::string& a, const std::string& b) { return realMeans.cells.at(a) > realMeans.cells.at(b); });
  if (int64_t(perturbations.size()) > o.maxPerturbations) perturbations.resize(size_t(std::max<int64_t>(0, o.maxPerturbations)));
  for (const auto& p : perturbations) {
    DeltaPanel panel;
    panel.perturbation = p;
    panel.realCells = realMeans.cells.at(p);
    panel.predCells = predMeans.cells.at(p);
    panel.real.resize(size_t(f.genes));
    panel.pred.resize(size_t(f.genes));
    for (size_t g = 0; g < size_t(f.genes); ++g) {
      panel.real[g] = realMeans.mean.at(p)[g] - realControl[g];
      panel.pred[g] = predMeans.mean.at(p)[g] - predControl[g];
    }
    panel.pearson = pearson(panel.real, panel.pred);
    f.panels.push_back(std::move(panel));
  }

  // PCA fitted on all real cells, read in row blocks; the figure shows a subsample of each side.
  if (real.n_obs() >= 2 && f.genes >= 2) {
    auto blocks = [](const data::CsrMatrix& x) -> RowBlocks {
      return [&x](int64_t start, int64_t end) {
        std::vector<int64_t> rows(size_t(end - start));
        std::iota(rows.begin(), rows.end(), start);
        return data::denseRows(x, rows);  // [end - start, genes]
      };
    };
    const Pca pca = fitPcaCovariance(real.n_obs(), f.genes, blocks(real.X), 2);
    const double total = totalVariance(real.X);
    for (int k = 0; k < 2; ++k) f.varianceShare[k] = total > 0 ? pca.explainedVariance[k].item<double>() / total : kNaN;
    auto project = [&](const data::CsrMatrix& x, uint64_t seed, std::vector<double>& pc1, std::vector<double>& pc2) {
      const std::vector<int64_t> rows = subsampleRows(x.rows, o.maxPcaCells, seed);
      if (rows.empty()) return;
      const at::Tensor pcs = pca.transform(data::denseRows(x, rows)).contiguous();  // [cells, 2] float64
      const double* p = pcs.data_ptr<double>();
      for (size_t i = 0; i < rows.size(); ++i) pc1.push_back(p[2 * i]), pc2.push_back(p[2 * i + 1]);
    };
    project(real.X, o.seed, f.realPc1, f.realPc2);
    project(pred.X, o.seed + 1, f.predPc1, f.predPc2);
    f.realCells = real.n_obs();
    f.predCells = pred.n_obs();
    f.pca = true;
  }
  return f;
}

// ---- figures -----------------------------------------------------------------------------------

std::string lossFigure(const LossCurve& curve) {
  std::vector<PlotSeries> series;
  double lo = INFINITY, hi = -INFINITY;
  size_t colour = 0;
  std::vector<std::string> order;  // train first, then the other splits by name
  if (curve.splits.count("train")) order.push_back("train");
  for (const auto& [split, points] : curve.splits)
    if (split != "train") order.push_back(split);
  for (const auto& split : order) {
    PlotSeries s;
    s.label = split + " loss";
    s.color = kPalette[colour++ % 6];
    for (const auto& [step, loss] : curve.splits.at(split)) {
      s.x.push_back(step), s.y.push_back(loss);
      if (std::isfinite(loss)) lo = std::min(lo, loss), hi = std::max(hi, loss);
    }
    series.push_back(s);
    if (s.x.size() < 20) {  // sparse splits (validation) also get markers
      s.label.clear();
      s.style = SeriesStyle::Points;
      s.pointRadius = 3;
      series.push_back(s);
    }
  }
  PlotSpec spec;
  spec.title = curve.label + ": loss";
  spec.xLabel = "training step";
  spec.logY = lo > 0 && hi / lo > 30;
  spec.yLabel = spec.logY ? "loss (log scale)" : "loss";
  spec.width = 420, spec.height = 300;
  spec.attributes = {{"data-kind", "loss"}, {"data-run", curve.label}};
  return renderSvgPlot(series, spec);
}

std::string deltaFigure(const DeltaPanel& p) {
  PlotSeries s;
  s.color = "#1f77b4";
  s.style = SeriesStyle::Points;
  s.pointRadius = 2.2;
  s.opacity = 0.6;
  s.x = p.real, s.y = p.pred;
  PlotSpec spec;
  spec.title = p.perturbation + ": r = " + fixed(p.pearson, "%.3f");
  spec.xLabel = "real Δ mean log1p expression";
  spec.yLabel = "predicted Δ mean log1p expr.";
  spec.width = 300, spec.height = 300;
  spec.sameAxes = true;
  spec.identityLine = true;
  spec.attributes = {{"data-kind", "delta"},
                     {"data-perturbation", p.perturbation},
                     {"data-pearson-r", exactNumber(p.pearson)},
                     {"data-real-cells", std::to_string(p.realCells)},
                     {"data-pred-cells", std::to_string(p.predCells)}};
  return renderSvgPlot({s}, spec);
}

std::string pcaFigure(const PredictionFigures& f) {
  // The two sides are drawn in alternating slices (every kSlices-th cell each), so that neither
  // colour covers the other wholesale; only the first slice of a side carries its legend label.
  constexpr size_t kSlices = 8;
  const struct {
    const std::vector<double>&pc1, &pc2;
    std::string label, color;
  } sides[] = {{f.realPc1, f.realPc2, "real (" + std::to_string(f.realPc1.size()) + " of " + std::to_string(f.realCells) + " cells)", "#1f77b4"},
               {f.predPc1, f.predPc2, "generated (" + std::to_string(f.predPc1.size()) + " of " + std::to_string(f.predCells) + " cells)", "#ff7f0e"}};
  std::vector<PlotSeries> series;
  for (size_t slice = 0; slice < kSlices; ++slice)
    for (const auto& side : sides) {
      PlotSeries s;
      s.label = slice == 0 ? side.label : "";
      s.color = side.color;
      s.style = SeriesStyle::Points;
      s.pointRadius = 1.8;
      s.opacity = 0.45;
      for (size_t i = slice; i < side.pc1.size(); i += kSlices) s.x.push_back(side.pc1[i]), s.y.push_back(side.pc2[i]);
      series.push_back(std::move(s));
    }
  PlotSpec spec;
  spec.title = f.label + ": PCA of real and generated cells";
  spec.xLabel = "PC1 (" + fixed(100 * f.varianceShare[0], "%.1f") + "% of real variance)";
  spec.yLabel = "PC2 (" + fixed(100 * f.varianceShare[1], "%.1f") + "% of real variance)";
  spec.width = 560, spec.height = 460;
  spec.attributes = {{"data-kind", "pca"},
                     {"data-variance-share", exactNumber(f.varianceShare[0]) + " " + exactNumber(f.varianceShare[1])}};
  return renderSvgPlot(series, spec);
}

// ---- writers -----------------------------------------------------------------------------------

struct Row {
  std::string group, name;
};

// The metric rows in order of first appearance, grouped.
std::vector<Row> tableRows(const std::vector<MetricColumn>& columns) {
  std::vector<Row> rows;
  std::set<std::pair<std::string, std::string>> seen;
  for (const char* group : {kCellEvalGroup, kDistributionGroup, kReconstructionGroup})
    for (const auto& c : columns)
      for (const auto& v : c.values)
        if (v.group == group && seen.insert({v.group, v.name}).second) rows.push_back({v.group, v.name});
  return rows;
}

const MetricValue* find(const MetricColumn& c, const Row& r) {
  for (const auto& v : c.values)
    if (v.group == r.group && v.name == r.name) return &v;
  return nullptr;
}

// A column label as two lines, run directory over the path inside it, so that headers stay narrow
// and break only there.
std::string columnHeading(const std::string& label) {
  const size_t slash = label.find('/');
  if (slash == std::string::npos) return xmlEscape(label);
  return xmlEscape(label.substr(0, slash)) + "/<br/>" + xmlEscape(label.substr(slash + 1));
}

struct LossSummary {
  double lastStep = kNaN, lastTrain = kNaN, lastVal = kNaN, bestVal = kNaN;
};

LossSummary summarise(const LossCurve& c) {
  LossSummary s;
  for (const auto& [split, points] : c.splits) {
    if (points.empty()) continue;
    s.lastStep = std::isnan(s.lastStep) ? points.back().first : std::max(s.lastStep, points.back().first);
    if (split == "train") s.lastTrain = points.back().second;
    if (split == "val") {
      s.lastVal = points.back().second;
      for (const auto& p : points)
        if (std::isnan(s.bestVal) || p.second < s.bestVal) s.bestVal = p.second;
    }
  }
  return s;
}

std::string nowUtc() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

const char* const kCss = R"(
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 20px; border-bottom: 2px solid #ccc; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 16px; margin-bottom: 6px; }
p, li { font-size: 14px; line-height: 1.45; }
.meta { color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; padding: 6px; }
figure svg { display: block; }
figcaption { font-size: 12px; color: #555; max-width: 560px; margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; background: #fff; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; white-space: nowrap; }
th.metric { text-align: left; font-weight: normal; background: #fff; }
tr.group th { text-align: left; background: #e4e9f0; }
td.missing { color: #999; text-align: center; }
)";

}  // namespace

// ---- scan ----------------------------------------------------------------------------------------

ReportInputs findReportInputs(const std::vector<std::string>& runDirs, int maxDepth) {
  ReportInputs inputs;
  inputs.runDirs = runDirs;
  std::set<fs::path> seen;
  for (const auto& runDir : runDirs) {
    std::error_code ec;
    if (!fs::is_directory(runDir, ec))
      throw std::invalid_argument("report: run directory '" + runDir + "' " +
                                  (fs::exists(runDir, ec) ? "is not a directory" : "does not exist") +
                                  "; pass training, evaluation or generation output directories");
    const fs::path root = fs::weakly_canonical(runDir);
    const std::string name = root.filename().string();
    std::vector<fs::path> dirs = {root};
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied);
         it != fs::recursive_directory_iterator(); ++it) {
      if (!it->is_directory() || it->is_symlink()) continue;
      const std::string leaf = it->path().filename().string();
      // depth() is 0 for the run directory's children: a directory at depth maxDepth - 1 is the last level.
      if (it.depth() + 1 >= maxDepth || leaf == "checkpoints" || leaf == "tensorboard") it.disable_recursion_pending();
      if (leaf != "checkpoints" && leaf != "tensorboard") dirs.push_back(it->path());
    }
    std::sort(dirs.begin() + 1, dirs.end());
    bool found = false;
    for (const auto& dir : dirs) {
      const fs::path rel = fs::relative(dir, root);
      const ReportItem item{rel == "." ? name : name + "/" + rel.generic_string(), dir};
      const bool log = fs::exists(dir / "metrics.jsonl"), evaluation = isEvaluationDir(dir),
                 prediction = fs::exists(dir / "pred.h5ad") && fs::exists(dir / "real.h5ad");
      found = found || log || evaluation || prediction;
      if (!seen.insert(dir).second) continue;  // already found through an overlapping run directory
      if (log) inputs.trainingLogs.push_back(item);
      if (evaluation) inputs.evaluations.push_back(item);
      if (prediction) inputs.predictions.push_back(item);
    }
    if (!found)
      throw std::invalid_argument("report: '" + runDir + "' holds nothing to report within " + std::to_string(maxDepth) +
                                  " levels (no metrics.jsonl, agg_results.csv, distribution.csv, reconstruction "
                                  "summary.json, or pred.h5ad with real.h5ad)");
  }
  return inputs;
}

// ---- report --------------------------------------------------------------------------------------

bool adoptEvaluationLabels(const ReportInputs& inputs, ReportOptions& options) {
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& item : inputs.evaluations) {
    std::ifstream in(item.dir / "summary.json");
    if (!in) continue;
    const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.contains("inputs")) continue;
    const auto& recorded = json["inputs"];
    if (recorded.contains("pert_col") && recorded.contains("control_pert") && recorded["pert_col"].is_string() &&
        recorded["control_pert"].is_string()) {
      seen.emplace(recorded["pert_col"].get<std::string>(), recorded["control_pert"].get<std::string>());
    }
  }
  if (seen.size() != 1) return false;
  options.pertCol = seen.begin()->first;
  options.controlPert = seen.begin()->second;
  return true;
}

ReportFiles writeReport(const ReportInputs& inputs, const ReportOptions& o, const std::string& htmlPath) {
  std::vector<LossCurve> curves;
  for (const auto& item : inputs.trainingLogs) curves.push_back(readLossCurve(item));
  std::vector<MetricColumn> columns;
  for (const auto& item : inputs.evaluations) columns.push_back(readEvaluation(item));
  std::vector<PredictionFigures> predictions;
  for (const auto& item : inputs.predictions) predictions.push_back(readPredictions(item, o));
  const std::vector<Row> rows = tableRows(columns);

  ReportFiles files;
  files.html = htmlPath;
  files.markdown = fs::path(htmlPath).replace_extension(".md").string();
  files.tableColumns = int64_t(columns.size());
  files.tableRows = int64_t(rows.size());

  std::ostringstream html, md;
  std::string dirList;
  for (const auto& d : inputs.runDirs) dirList += (dirList.empty() ? "" : ", ") + d;
  html << "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
       << "<title>latentcell report</title>\n<style>" << kCss << "</style>\n</head>\n<body>\n"
       << "<h1>latentcell report</h1>\n<p class=\"meta\">Run directories: " << xmlEscape(dirList) << ". Written "
       << nowUtc() << ".</p>\n<ul>\n"
       << "<li><a href=\"#training\">Training curves</a> (" << curves.size() << " runs)</li>\n"
       << "<li><a href=\"#metrics\">Evaluation metrics</a> (" << columns.size() << " evaluations)</li>\n"
       << "<li><a href=\"#predictions\">Predicted vs real</a> (" << predictions.size() << " prediction sets)</li>\n</ul>\n";
  md << "# latentcell report\n\nRun directories: " << dirList << ". Written " << nowUtc() << ".\n";

  // Training.
  html << "<section id=\"training\">\n<h2>Training curves</h2>\n";
  md << "\n## Training runs\n\n";
  if (curves.empty()) {
    html << "<p>No metrics.jsonl found.</p>\n";
    md << "No metrics.jsonl found.\n";
  } else {
    html << "<p>Loss against training step, one figure per run's metrics.jsonl; validation losses are the "
            "held-out evaluations the trainer logged. The y axis is logarithmic when the loss spans more than a "
            "factor of 30.</p>\n<div class=\"grid\">\n";
    md << "| run | last step | final train loss | final val loss | best val loss |\n|---|---:|---:|---:|---:|\n";
    for (const auto& c : curves) {
      html << "<figure>" << lossFigure(c) << "<figcaption>" << xmlEscape(c.label) << "/metrics.jsonl</figcaption></figure>\n";
      ++files.lossFigures;
      const LossSummary s = summarise(c);
      md << "| " << c.label << " | " << fixed(s.lastStep, "%.0f") << " | " << shortNumber(s.lastTrain) << " | "
         << shortNumber(s.lastVal) << " | " << shortNumber(s.bestVal) << " |\n";
    }
    html << "</div>\n<h3>Final losses</h3>\n<div class=\"scroll\"><table>\n<tr><th>run</th><th>last step</th>"
            "<th>final train loss</th><th>final val loss</th><th>best val loss</th></tr>\n";
    for (const auto& c : curves) {
      const LossSummary s = summarise(c);
      html << "<tr><th class=\"metric\">" << xmlEscape(c.label) << "</th><td>" << fixed(s.lastStep, "%.0f") << "</td>";
      for (double v : {s.lastTrain, s.lastVal, s.bestVal})
        html << "<td data-value=\"" << exactNumber(v) << "\">" << shortNumber(v) << "</td>";
      html << "</tr>\n";
    }
    html << "</table></div>\n";
  }
  html << "</section>\n";

  // Metrics.
  html << "<section id=\"metrics\">\n<h2>Evaluation metrics</h2>\n";
  md << "\n## Evaluation metrics\n\n";
  if (columns.empty()) {
    html << "<p>No evaluation directory found (agg_results.csv, distribution.csv or a reconstruction summary.json).</p>\n";
    md << "No evaluation directory found.\n";
  } else {
    html << "<p>One column per evaluation directory. cell-eval metrics are the <code>mean</code> row of "
            "agg_results.csv; distribution metrics (W1, W2, MMD², FD in 30 PCs) are averaged over perturbations; "
            "reconstruction metrics are a stage-1 evaluation's numbers over all cells. NaN: undefined; "
            "–: not evaluated.</p>\n<div class=\"scroll\"><table id=\"metrics-table\">\n<tr><th>metric</th>";
    md << "| metric |";
    for (const auto& c : columns) {
      html << "<th>" << columnHeading(c.label) << "</th>";
      md << ' ' << c.label << " |";
    }
    html << "</tr>\n";
    md << "\n|---|";
    for (size_t i = 0; i < columns.size(); ++i) md << "---:|";
    md << '\n';
    std::string group;
    for (const auto& r : rows) {
      if (r.group != group) {
        group = r.group;
        html << "<tr class=\"group\"><th colspan=\"" << columns.size() + 1 << "\">" << xmlEscape(group) << "</th></tr>\n";
        md << "| **" << group << "** |" << std::string(columns.size(), '|') << '\n';
      }
      html << "<tr><th class=\"metric\">" << xmlEscape(r.name) << "</th>";
      md << "| " << r.name << " |";
      for (const auto& c : columns) {
        const MetricValue* v = find(c, r);
        if (v) {
          html << "<td data-group=\"" << xmlEscape(r.group) << "\" data-metric=\"" << xmlEscape(r.name)
               << "\" data-column=\"" << xmlEscape(c.label) << "\" data-value=\"" << exactNumber(v->value) << "\">"
               << shortNumber(v->value) << "</td>";
          md << ' ' << shortNumber(v->value) << " |";
        } else {
          html << "<td class=\"missing\">–</td>";
          md << " – |";
        }
      }
      html << "</tr>\n";
      md << '\n';
    }
    html << "</table></div>\n";
  }
  html << "</section>\n";

  // Predictions.
  html << "<section id=\"predictions\">\n<h2>Predicted vs real</h2>\n";
  md << "\n## Predicted vs real\n\n";
  if (predictions.empty()) {
    html << "<p>No directory with pred.h5ad and real.h5ad found.</p>\n";
    md << "No directory with pred.h5ad and real.h5ad found.\n";
  }
  for (const auto& f : predictions) {
    html << "<h3>" << xmlEscape(f.label) << "</h3>\n<p>" << f.genes << " genes, " << f.perturbations
         << " perturbations with real and generated cells; expression is log1p(x / library size × "
         << fixed(o.targetSum, "%g") << ")" << (f.realNormalised || f.predNormalised ? " (computed from counts)" : "")
         << ". Each point of a panel is a gene: the mean expression of the perturbation's cells minus that of the '"
         << xmlEscape(o.controlPert) << "' cells, real (x) against generated (y); dashed: y = x; r: Pearson "
            "correlation over genes."
         << (f.predControlFromReal ? " pred.h5ad has no control cells: its changes are taken from the real control mean." : "");
    if (f.perturbations > int64_t(f.panels.size()))
      html << " Showing the " << f.panels.size() << " perturbations with the most real cells.";
    html << "</p>\n<div class=\"grid\">\n";
    md << "### " << f.label << "\n\n| perturbation | real cells | generated cells | Pearson r of deltas |\n|---|---:|---:|---:|\n";
    for (const auto& p : f.panels) {
      html << "<figure>" << deltaFigure(p) << "<figcaption>" << xmlEscape(p.perturbation) << ": " << p.realCells
           << " real, " << p.predCells << " generated cells</figcaption></figure>\n";
      ++files.deltaFigures;
      md << "| " << p.perturbation << " | " << p.realCells << " | " << p.predCells << " | " << fixed(p.pearson, "%.4f") << " |\n";
    }
    html << "</div>\n";
    if (f.pca) {
      html << "<div class=\"grid\"><figure>" << pcaFigure(f) << "<figcaption>First two principal components of "
           << "the real cells (all of them, every perturbation and the control); generated cells projected with the "
              "same mean and loadings. A seeded subsample of at most "
           << o.maxPcaCells << " cells per side is drawn.</figcaption></figure></div>\n";
      ++files.pcaFigures;
    }
    md << '\n';
  }
  html << "</section>\n</body>\n</html>\n";

  for (const auto& [path, text] : {std::pair{files.html, html.str()}, std::pair{files.markdown, md.str()}}) {
    std::ofstream out(path);
    out << text;
    if (!out) throw std::runtime_error("report: cannot write " + path + ": check that its directory is writable");
  }
  return files;
}

}  // namespace latentcell::eval
