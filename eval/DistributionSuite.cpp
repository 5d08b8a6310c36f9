// The scLDM / CFGen distribution protocol (see DistributionSuite.h). The expensive step is the PCA of
// all real cells ([cells, genes] on the chosen device, eval::fitPca); per-condition metrics then work
// on [cells, 30] projections, where only the exact transport (LEMON, CPU) costs anything.
#include "eval/DistributionSuite.h"

#include "core/Random.h"
#include "data/Preprocess.h"
#include "eval/CellEvalSuite.h"
#include "eval/DistributionMetrics.h"
#include "eval/Parallel.h"
#include "eval/StageLog.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>

namespace latentcell::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Key = std::pair<std::string, std::string>;  // (celltype, perturbation)

// Rows of each condition in file order; the control label is not a condition.
std::map<Key, std::vector<int64_t>> conditionRows(const data::AnnData& adata, const DistributionOptions& o) {
  const data::Column& pert = adata.obsColumn(o.pertCol);
  const data::Column* celltype = o.celltypeCol.empty() ? nullptr : &adata.obsColumn(o.celltypeCol);
  std::map<Key, std::vector<int64_t>> rows;
  for (int64_t i = 0; i < adata.n_obs(); ++i) {
    const std::string p = pert.text(i);
    if (p == o.controlPert) continue;
    rows[{celltype ? celltype->text(i) : std::string(), p}].push_back(i);
  }
  return rows;
}

std::string conditionText(const Key& key, const DistributionOptions& o) {
  std::string s = o.pertCol + "='" + key.second + "'";
  return o.celltypeCol.empty() ? s : o.celltypeCol + "='" + key.first + "', " + s;
}

// At most `cap` of `rows` (all when cap <= 0), a seeded random subset kept in file order.
std::vector<int64_t> subsample(std::vector<int64_t> rows, int64_t cap, uint64_t seed) {
  if (cap <= 0 || int64_t(rows.size()) <= cap) return rows;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < cap; ++i) {  // partial Fisher-Yates; std::mt19937_64's output is fixed by the standard
    const int64_t j = i + int64_t(rng() % uint64_t(int64_t(rows.size()) - i));
    std::swap(rows[size_t(i)], rows[size_t(j)]);
  }
  rows.resize(size_t(cap));
  std::sort(rows.begin(), rows.end());
  return rows;
}

double nanMean(const std::vector<DistributionRow>& rows, double DistributionRow::*field) {
  double sum = 0;
  int64_t n = 0;
  for (const auto& r : rows)
    if (!std::isnan(r.*field)) sum += r.*field, ++n;
  return n ? sum / double(n) : kNaN;
}

}  // namespace

bool toDistributionLogSpace(data::CsrMatrix& x, double targetSum, const std::string& which, const std::string& source) {
  if (looksLogNormalised(x, which, source)) return false;
  data::normalizeTotalInPlace(x, targetSum);
  data::log1pInPlace(x);
  return true;
}

DistributionReport evaluateDistribution(data::AnnData real, data::AnnData pred,
                                        const DistributionOptions& o) {
  const auto& genes = real.var.index;
  if (genes != pred.var.index) {
    const size_t n = std::min(genes.size(), pred.var.index.size());
    size_t i = 0;
    while (i < n && genes[i] == pred.var.index[i]) ++i;
    throw std::invalid_argument("distribution metrics: real (" + real.source + ") and pred (" + pred.source +
                                ") var_names differ (" + std::to_string(genes.size()) + " vs " +
                                std::to_string(pred.var.index.size()) + " genes, first difference at gene " +
                                std::to_string(i) + "); reorder pred's var to real's var_names");
  }
  const auto realRows = conditionRows(real, o), predRows = conditionRows(pred, o);
  for (const auto& [a, b, which] : {std::tuple{&realRows, &predRows, "pred"}, std::tuple{&predRows, &realRows, "real"}})
    for (const auto& [key, rows] : *a)
      if (!b->count(key))
        throw std::invalid_argument("distribution metrics: " + std::string(which) + " has no cells of " +
                                    conditionText(key, o) + "; every condition needs real and predicted cells");
  if (realRows.empty())
    throw std::invalid_argument("distribution metrics: real (" + real.source + ") has no cells besides the control '" +
                                o.controlPert + "'");

  DistributionReport report;
  StageLog stages("distribution");
  data::CsrMatrix realX = std::move(real.X), predX = std::move(pred.X);
  // Step 1 on the counts, before they are normalised.
  const bool realCounts = !looksLogNormalised(realX, "real", real.source);
  std::vector<int64_t> columns;
  if (realCounts && realX.cols > o.topGenes) {
    data::HvgOptions hvg;
    hvg.n_top_genes = o.topGenes;
    columns = data::highlyVariableGenesSeuratV3(realX, hvg).selected;
    std::sort(columns.begin(), columns.end());  // scanpy's boolean mask keeps var order
    report.hvgSelected = true;
  }
  parallelFor(2, o.threads, [&](int64_t side) {  // side 0 (real) first: its errors win
    data::CsrMatrix& x = side == 0 ? realX : predX;
    (side == 0 ? report.realNormalised : report.predNormalised) =
        toDistributionLogSpace(x, o.targetSum, side == 0 ? "real" : "pred", (side == 0 ? real : pred).source);
    if (report.hvgSelected) x = data::selectGenes(x, columns);
  });
  report.genes = realX.cols;
  stages.lap("hvg and log1p");

  // Step 3: PCA on all real cells (control included), both sides projected.
  at::Tensor realPcs, predPcs;  // [cells, k] float64 on the device
  {
    // Row blocks densified from the CSR as the PCA reads them: no [cells, genes] matrix is held.
    auto blocksOf = [&](const data::CsrMatrix& x) -> RowBlocks {
      return [&x, &o](int64_t start, int64_t end) {
        std::vector<int64_t> rows(size_t(end - start));
        std::iota(rows.begin(), rows.end(), start);
        return data::denseRows(x, rows).to(o.device);  // [end - start, genes]
      };
    };
    report.components = std::min({o.components, realX.rows, realX.cols});
    const bool covariance = realX.rows >= 2 * realX.cols && realX.cols >= 256;  // fitPca's Auto rule
    const Pca pca = covariance ? fitPcaCovariance(realX.rows, realX.cols, blocksOf(realX), report.components,
                                                  o.threads)
                               : fitPca(data::denseRows(realX).to(o.device), report.components, PcaSolver::Svd);
    stages.lap("pca fit");
    realPcs = pca.transform(realX.rows, blocksOf(realX));
    predPcs = pca.transform(predX.rows, blocksOf(predX));
    stages.lap("pca transform");
  }

  // Step 4, one condition per thread on the CPU (the transport solver is serial anyway).
  const std::vector<std::pair<Key, std::vector<int64_t>>> conditions(realRows.begin(), realRows.end());
  report.rows.resize(conditions.size());
  auto measure = [&](size_t index) {
    const auto& [key, allRealRows] = conditions[index];
    const uint64_t seed = core::splitMix64(o.seed + 2 * uint64_t(index));
    const auto rRows = subsample(allRealRows, o.maxCells, seed);
    const auto pRows = subsample(predRows.at(key), o.maxCells, core::splitMix64(seed + 1));
    auto take = [&](const at::Tensor& pcs, const std::vector<int64_t>& rows) {
      return pcs.index_select(0, at::tensor(rows, at::kLong).to(pcs.device()));  // [n, k]
    };
    const at::Tensor x = take(realPcs, rRows), y = take(predPcs, pRows);
    DistributionRow row;
    row.celltype = key.first;
    row.condition = key.second;
    row.realCells = x.size(0);
    row.predCells = y.size(0);
    if (double(x.size(0)) * double(y.size(0)) >= double(std::numeric_limits<int>::max()))
      throw std::invalid_argument("distribution metrics: " + conditionText(key, o) + " has " +
                                  std::to_string(x.size(0)) + " x " + std::to_string(y.size(0)) +
                                  " cells, too many for exact transport; cap them with --dist-max-cells");
    row.w1 = wasserstein1(x, y);
    row.w2 = wasserstein2(x, y);
    row.mmdBiased = mmdRbfBiased(x, y, o.sigmas);
    const bool two = x.size(0) >= 2 && y.size(0) >= 2;
    row.mmdUnbiased = two ? mmdRbfUnbiased(x, y, o.sigmas) : kNaN;
    row.fd = two ? frechetDistance(x, y) : kNaN;
    report.rows[index] = row;
  };
  if (o.device.is_cpu()) {
    parallelFor(int64_t(conditions.size()), o.threads, [&](int64_t i) { measure(size_t(i)); });
  } else {
    for (size_t i = 0; i < conditions.size(); ++i) measure(i);
  }
  stages.lap("per-condition metrics");

  // Step 5.
  DistributionRow& m = report.mean;
  m.condition = "(mean)";
  for (const auto& r : report.rows) m.realCells += r.realCells, m.predCells += r.predCells;
  m.w1 = nanMean(report.rows, &DistributionRow::w1);
  m.w2 = nanMean(report.rows, &DistributionRow::w2);
  m.mmdBiased = nanMean(report.rows, &DistributionRow::mmdBiased);
  m.mmdUnbiased = nanMean(report.rows, &DistributionRow::mmdUnbiased);
  m.fd = nanMean(report.rows, &DistributionRow::fd);
  return report;
}

void writeDistributionCsv(const DistributionReport& report, bool withCelltype, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path + ": check that the directory exists and is writable");
  out << (withCelltype ? "celltype," : "") << "perturbation,n_real,n_pred,w1,w2,mmd2_rbf,mmd2_rbf_unbiased,fd\n";
  auto line = [&](const DistributionRow& r) {
    if (withCelltype) out << r.celltype << ',';
    out << r.condition << ',' << r.realCells << ',' << r.predCells << ',' << csvNumber(r.w1) << ','
        << csvNumber(r.w2) << ',' << csvNumber(r.mmdBiased) << ',' << csvNumber(r.mmdUnbiased) << ','
        << csvNumber(r.fd) << '\n';
  };
  for (const auto& r : report.rows) line(r);
  line(report.mean);
  if (!out) throw std::runtime_error("failed writing " + path + " (disk full?)");
}

}  // namespace latentcell::eval
