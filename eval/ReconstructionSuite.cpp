// Reconstruction metrics (see ReconstructionSuite.h). Both files are densified once as float64
// [cells, genes] tensors on the device; every metric is a reduction over the rows of a condition,
// and the DE metrics reuse the DE engine with one control reference per cell type.
#include "eval/ReconstructionSuite.h"

#include "data/H5ad.h"
#include "data/Preprocess.h"
#include "eval/CellEvalSuite.h"
#include "eval/Correlation.h"
#include "eval/DifferentialExpression.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>
#include <stdexcept>
#include <utility>

namespace latentcell::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kNbEps = 1e-8;  // scVI's log_nb_positive
using Key = std::pair<std::string, std::string>;  // (celltype, perturbation)

[[noreturn]] void fail(const std::string& message) {
  throw std::invalid_argument("reconstruction metrics: " + message);
}

void checkPairing(const data::AnnData& real, const data::AnnData& pred) {
  auto firstDifference = [](const std::vector<std::string>& a, const std::vector<std::string>& b) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    return i;
  };
  const std::string files = "real (" + real.source + ") and pred (" + pred.source + ")";
  if (real.obs.index != pred.obs.index) {
    const size_t i = firstDifference(real.obs.index, pred.obs.index);
    fail(files + " are not paired by cell: " + std::to_string(real.n_obs()) + " vs " +
         std::to_string(pred.n_obs()) + " cells, obs_names first differ at cell " + std::to_string(i) +
         (i < real.obs.index.size() && i < pred.obs.index.size()
              ? " ('" + real.obs.index[i] + "' vs '" + pred.obs.index[i] + "')"
              : std::string()) +
         "; write the reconstruction in real's cell order");
  }
  if (real.var.index != pred.var.index) {
    const size_t i = firstDifference(real.var.index, pred.var.index);
    fail(files + " var_names differ (" + std::to_string(real.n_vars()) + " vs " + std::to_string(pred.n_vars()) +
         " genes, first difference at gene " + std::to_string(i) + "); reorder pred's var to real's var_names");
  }
}

// log NB(x | mu, theta) per entry, scVI's log_nb_positive; theta = inf is the Poisson limit.
at::Tensor logNb(const at::Tensor& x, const at::Tensor& mu, const at::Tensor& theta) {  // [n, g], [n, g], [g]
  const at::Tensor finite = at::isfinite(theta);                                    // [g]
  const at::Tensor t = at::where(finite, theta, at::ones_like(theta));               // [g]
  const at::Tensor logThetaMu = at::log(t + mu + kNbEps);                            // [n, g]
  const at::Tensor nb = t * (at::log(t + kNbEps) - logThetaMu) + x * (at::log(mu + kNbEps) - logThetaMu) +
                        at::lgamma(x + t) - at::lgamma(t) - at::lgamma(x + 1.0);
  const at::Tensor poisson = x * at::log(mu + kNbEps) - mu - at::lgamma(x + 1.0);
  return at::where(finite, nb, poisson);
}

// theta_g from var['nb_theta'], or by moments given mu (see the header).
at::Tensor inverseDispersion(const data::AnnData& pred, const at::Tensor& x, const at::Tensor& mu,
                             std::string& source) {
  if (const data::Column* c = pred.var.find("nb_theta")) {
    if (c->kind != data::Column::Kind::Float && c->kind != data::Column::Kind::Int)
      fail("pred (" + pred.source + ") var['nb_theta'] is not numeric; write the decoder's theta per gene");
    std::vector<double> theta(size_t(c->size()));
    for (size_t g = 0; g < theta.size(); ++g) {
      theta[g] = c->kind == data::Column::Kind::Float ? c->floats[g] : double(c->ints[g]);
      if (!(theta[g] > 0.0))
        fail("pred (" + pred.source + ") var['nb_theta'] of gene '" + pred.var.index[g] + "' is " +
             std::to_string(theta[g]) + "; inverse dispersions must be > 0 (inf for Poisson)");
    }
    source = "var['nb_theta']";
    return at::tensor(theta, at::kDouble).to(x.device());
  }
  source = "moments";
  const at::Tensor num = mu.square().sum(0);                         // [g]
  const at::Tensor den = ((x - mu).square() - mu).sum(0);            // [g]
  return at::where((den > 0) & (num > 0), num / den, std::numeric_limits<double>::infinity());
}

// log1p(v / l * target) with l the real library sizes ([n, 1]); rows with l = 0 stay 0.
at::Tensor logNormalise(const at::Tensor& v, const at::Tensor& library, double target) {
  return at::where(library > 0, at::log1p(v / library * target), 0.0);  // [n, g]
}

double scalar(const at::Tensor& t) { return t.item<double>(); }

// Per gene Pearson across rows, averaged over the defined genes (torchmetrics + nanmean).
double meanGenePearson(const at::Tensor& a, const at::Tensor& b) {  // [n, g]
  if (a.size(0) < 2) return kNaN;
  const at::Tensor am = a - a.mean(0), bm = b - b.mean(0);
  const at::Tensor r = (am * bm).sum(0) / (am.square().sum(0) * bm.square().sum(0)).sqrt();  // [g]
  const at::Tensor defined = at::isfinite(r);
  return defined.any().item<bool>() ? scalar(r.masked_select(defined).clamp(-1.0, 1.0).mean()) : kNaN;
}

double r2OfSums(const at::Tensor& a, const at::Tensor& b) {  // [n, g]
  const at::Tensor s = a.sum(0), t = b.sum(0);               // [g]
  const double den = scalar((s - s.mean()).square().sum());
  return den > 0 ? 1.0 - scalar((s - t).square().sum()) / den : kNaN;
}

std::vector<double> toVector(const at::Tensor& t) {  // 1-D
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  return {c.const_data_ptr<double>(), c.const_data_ptr<double>() + c.numel()};
}

// The K genes of smallest fdr; ties to the larger |U - n_t n_r / 2|, then the lower gene index.
std::vector<int64_t> topGenes(const std::vector<double>& fdr, const std::vector<double>& u, double halfProduct,
                              int64_t k) {
  std::vector<int64_t> order(fdr.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    if (fdr[i] != fdr[j]) return fdr[i] < fdr[j];
    const double di = std::abs(u[i] - halfProduct), dj = std::abs(u[j] - halfProduct);
    if (di != dj) return di > dj;
    return i < j;
  });
  order.resize(size_t(k));
  std::sort(order.begin(), order.end());
  return order;
}

struct DeScores {
  double recall = kNaN, spearman = kNaN;
};

// DE of every condition of one cell type against its control, real vs reconstructed.
std::map<Key, DeScores> deScores(const at::Tensor& realLog, const at::Tensor& predLog,
                                 const std::map<Key, std::vector<int64_t>>& rows, const std::string& celltype,
                                 const std::string& control, int64_t k, int threads) {
  std::map<Key, DeScores> out;
  const auto ctrl = rows.find({celltype, control});
  if (ctrl == rows.end()) return out;
  std::vector<int64_t> cells = ctrl->second, groups(cells.size(), 0);
  std::vector<Key> conditions;
  for (const auto& [key, r] : rows) {
    if (key.first != celltype || key.second == control) continue;
    conditions.push_back(key);
    cells.insert(cells.end(), r.begin(), r.end());
    groups.insert(groups.end(), r.size(), int64_t(conditions.size()));
  }
  if (conditions.empty()) return out;
  const at::Tensor index = at::tensor(cells, at::kLong).to(realLog.device());
  const at::Tensor ids = at::tensor(groups, at::kLong).to(realLog.device());
  DeOptions options;
  options.threads = threads;
  const DeResult real = differentialExpression(realLog.index_select(0, index), ids, 0, options);
  const DeResult pred = differentialExpression(predLog.index_select(0, index), ids, 0, options);
  const double nRef = double(real.referenceMembership);
  for (size_t t = 0; t < conditions.size(); ++t) {  // targets are ids 1..C in order, all present
    const double half = 0.5 * nRef * double(real.targetMembership[int64_t(t)].item<int64_t>());
    const auto a = topGenes(toVector(real.fdr[int64_t(t)]), toVector(real.statistic[int64_t(t)]), half, k);
    const auto b = topGenes(toVector(pred.fdr[int64_t(t)]), toVector(pred.statistic[int64_t(t)]), half, k);
    std::vector<int64_t> common;
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
    DeScores s;
    s.recall = double(common.size()) / double(k);
    const auto lr = toVector(real.log2FoldChange[int64_t(t)]), lp = toVector(pred.log2FoldChange[int64_t(t)]);
    std::vector<double> x, y;
    for (size_t g = 0; g < lr.size(); ++g)
      if (std::isfinite(lr[g]) && std::isfinite(lp[g])) x.push_back(lr[g]), y.push_back(lp[g]);
    s.spearman = spearman(x, y);
    out[conditions[t]] = s;
  }
  return out;
}

}  // namespace

ReconstructionReport evaluateReconstruction(const data::AnnData& real, const data::AnnData& pred,
                                            const ReconstructionOptions& o) {
  checkPairing(real, pred);
  if (looksLogNormalised(real.X, "real", real.source))
    fail("real (" + real.source + ") X is not raw counts; the NB error and the library-size normalisation need "
         "counts (pass the counts, e.g. from layers/counts)");
  ReconstructionReport report;
  ReconstructionSpace space = o.predSpace;
  if (space == ReconstructionSpace::Auto) {
    const auto it = pred.uns_strings.find("reconstruction_space");
    const std::string declared = it == pred.uns_strings.end() ? "counts" : it->second;
    if (declared != "counts" && declared != "log1p")
      fail("pred (" + pred.source + ") uns['reconstruction_space'] is '" + declared + "'; use 'counts' or 'log1p'");
    space = declared == "log1p" ? ReconstructionSpace::Log1p : ReconstructionSpace::Counts;
  }
  report.predSpace = space == ReconstructionSpace::Log1p ? "log1p" : "counts";
  // Counts must be finite and >= 0 (the NB error and the normalisation need them); a log1p-space
  // reconstruction only finite: an affine decoder such as PCA's goes below 0, and clipping it here
  // would change the model being scored.
  if (space == ReconstructionSpace::Counts) {
    if (const auto bad = data::firstNonCount(pred.X, /*whole=*/false))
      fail("pred (" + pred.source + ") X has the value " + std::to_string(bad->value) + " at cell " +
           std::to_string(bad->row) + ", gene " + std::to_string(bad->col) +
           "; a count-space reconstruction must be finite and >= 0");
  } else {
    for (int64_t r = 0; r < pred.X.rows; ++r)
      for (int64_t k = pred.X.indptr[size_t(r)]; k < pred.X.indptr[size_t(r) + 1]; ++k)
        if (!std::isfinite(pred.X.data[size_t(k)]))
          fail("pred (" + pred.source + ") X has the value " + std::to_string(pred.X.data[size_t(k)]) +
               " at cell " + std::to_string(r) + ", gene " + std::to_string(pred.X.indices[size_t(k)]) +
               "; a log1p-space reconstruction must be finite");
  }

  const at::Tensor x = data::denseRows(real.X).to(o.device, at::kDouble);  // [n, g] counts
  const at::Tensor p = data::denseRows(pred.X).to(o.device, at::kDouble);  // [n, g]
  const at::Tensor library = x.sum(1, /*keepdim=*/true);                    // [n, 1]
  const at::Tensor realLog = logNormalise(x, library, o.targetSum);
  at::Tensor cellNll;  // [n]
  if (space == ReconstructionSpace::Counts) {
    const at::Tensor theta = inverseDispersion(pred, x, p, report.thetaSource);
    cellNll = -logNb(x, p, theta).sum(1);
  } else {
    report.thetaSource = "none";
  }
  const at::Tensor predLog = space == ReconstructionSpace::Counts ? logNormalise(p, library, o.targetSum) : p;

  const data::Column& pert = real.obsColumn(o.pertCol);
  const data::Column* celltype = o.celltypeCol.empty() ? nullptr : &real.obsColumn(o.celltypeCol);
  std::map<Key, std::vector<int64_t>> rows;
  for (int64_t i = 0; i < real.n_obs(); ++i) rows[{celltype ? celltype->text(i) : "", pert.text(i)}].push_back(i);
  report.topK = std::min<int64_t>(o.topK, x.size(1));

  std::map<Key, DeScores> de;
  std::vector<std::string> celltypes;
  for (const auto& [key, r] : rows) {
    if (key.second == o.controlPert) report.hasControl = true;
    if (celltypes.empty() || celltypes.back() != key.first) celltypes.push_back(key.first);
  }
  for (const auto& c : celltypes) de.merge(deScores(realLog, predLog, rows, c, o.controlPert, report.topK, o.threads));

  auto fill = [&](ReconstructionRow& row, const at::Tensor& index) {
    const at::Tensor a = realLog.index_select(0, index), b = predLog.index_select(0, index);
    row.cells = index.numel();
    row.nbError = cellNll.defined() ? scalar(cellNll.index_select(0, index).mean()) : kNaN;
    row.pcc = meanGenePearson(a, b);
    row.mse = scalar((a - b).square().mean());
    row.r2Sum = r2OfSums(a, b);
  };
  double recallSum = 0, spearmanSum = 0;
  int64_t recallN = 0, spearmanN = 0;
  for (const auto& [key, r] : rows) {
    ReconstructionRow row;
    row.celltype = key.first;
    row.condition = key.second;
    fill(row, at::tensor(r, at::kLong).to(o.device));
    const auto it = de.find(key);
    row.degRecall = it == de.end() ? kNaN : it->second.recall;
    row.logfcSpearman = it == de.end() ? kNaN : it->second.spearman;
    if (!std::isnan(row.degRecall)) recallSum += row.degRecall, ++recallN;
    if (!std::isnan(row.logfcSpearman)) spearmanSum += row.logfcSpearman, ++spearmanN;
    report.rows.push_back(row);
  }
  report.all.condition = "(all)";
  fill(report.all, at::arange(x.size(0), at::TensorOptions().dtype(at::kLong).device(o.device)));
  report.all.degRecall = recallN ? recallSum / double(recallN) : kNaN;
  report.all.logfcSpearman = spearmanN ? spearmanSum / double(spearmanN) : kNaN;
  return report;
}

void writeReconstructionCsv(const ReconstructionReport& report, bool withCelltype, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path + ": check that the directory exists and is writable");
  out << (withCelltype ? "celltype," : "")
      << "perturbation,n_cells,nb_error,pcc,mse,r2_sum,deg_recall_at_100,logfc_spearman\n";
  auto line = [&](const ReconstructionRow& r) {
    if (withCelltype) out << r.celltype << ',';
    out << r.condition << ',' << r.cells << ',' << csvNumber(r.nbError) << ',' << csvNumber(r.pcc) << ','
        << csvNumber(r.mse) << ',' << csvNumber(r.r2Sum) << ',' << csvNumber(r.degRecall) << ','
        << csvNumber(r.logfcSpearman) << '\n';
  };
  for (const auto& r : report.rows) line(r);
  line(report.all);
  if (!out) throw std::runtime_error("failed writing " + path + " (disk full?)");
}

}  // namespace latentcell::eval
