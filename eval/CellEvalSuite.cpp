// cell-eval's pipeline (see CellEvalSuite.h). Each metric follows the cell-eval 0.8.2 function named
// in its comment; where cell-eval goes through polars or sklearn, the comment says which detail
// of theirs changes the number and how it is reproduced.
#include "eval/CellEvalSuite.h"

#include "data/Preprocess.h"
#include "eval/Correlation.h"
#include "eval/DistributionMetrics.h"
#include "eval/Parallel.h"
#include "eval/StageLog.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <stdexcept>
#include <tuple>

namespace latentcell::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Column = std::vector<std::optional<double>>;

std::string listText(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;  // long gene lists would not fit one line
  std::string s = "[";
  for (size_t i = 0; i < names.size() && i < kShown; ++i) s += (i ? " '" : "'") + names[i] + "'";
  if (names.size() > kShown) s += " ... (" + std::to_string(names.size()) + " in all)";
  return s + "]";
}

std::vector<std::string> sortedUnique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::string fixed2(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// cell-eval's PerturbationAnndataPair.__post_init__ checks, in its order.
void checkPair(const CellEvalData& real, const CellEvalData& pred, const std::string& control) {
  if (real.genes.size() != pred.genes.size())
    throw std::invalid_argument("Shape mismatch: real " + std::to_string(real.genes.size()) + " != pred " +
                                std::to_string(pred.genes.size()) + " Expected to be the same number of genes");
  const auto diff = std::mismatch(real.genes.begin(), real.genes.end(), pred.genes.begin());
  if (diff.first != real.genes.end())
    throw std::invalid_argument("Gene names order mismatch: real " + listText(real.genes) + " != pred " +
                                listText(pred.genes) + " (first difference at gene " +
                                std::to_string(diff.first - real.genes.begin()) + ": '" + *diff.first +
                                "' vs '" + *diff.second + "'); reorder pred's var to real's var_names");
  const auto perts = sortedUnique(real.perturbations), predPerts = sortedUnique(pred.perturbations);
  if (perts != predPerts)
    throw std::invalid_argument("Perturbation mismatch: real " + listText(perts) + " != pred " +
                                listText(predPerts));
  if (!std::binary_search(perts.begin(), perts.end(), control))
    throw std::invalid_argument("Control perturbation (" + control + ") not found in real AnnData: " +
                                listText(perts) + "; pass the control's label with --control-pert");
}

// sklearn's average_precision_score and roc_curve + auc: thresholds at the distinct scores, descending.
struct Auc {
  double pr = kNaN, roc = kNaN;
};
Auc aucScores(const std::vector<float>& scores, const std::vector<uint8_t>& labels) {
  const double positives = std::count(labels.begin(), labels.end(), 1);
  const double negatives = double(labels.size()) - positives;
  if (positives == 0 || negatives == 0) return {};  // cell-eval: NaN unless both classes occur
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return scores[i] > scores[j]; });
  double tp = 0, fp = 0, prevRecall = 0, prevFpr = 0, prevTpr = 0;
  Auc auc{0.0, 0.0};
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    for (; j < order.size() && scores[order[j]] == scores[order[i]]; ++j) labels[order[j]] ? ++tp : ++fp;
    const double recall = tp / positives, fpr = fp / negatives;
    auc.pr += (recall - prevRecall) * (tp / (tp + fp));
    auc.roc += (fpr - prevFpr) * (recall + prevTpr) / 2.0;
    prevRecall = recall, prevFpr = fpr, prevTpr = recall;
    i = j;
  }
  return auc;
}

// One file's values: its log1p cells as CSR (never densified whole: DE reads the CSR, the energy
// distances one label's rows at a time), each cell's label and the float32 pseudobulks.
struct Side {
  const data::CsrMatrix* x = nullptr;      // [cells, genes] log1p values
  std::vector<int64_t> labelOf;            // [cells] index into the sorted labels
  std::vector<std::vector<int64_t>> rows;  // [labels] rows of each label, in file order
  at::Tensor bulk;                         // [labels, genes] float32 means (polars' group_by().mean() keeps float32)
  c10::Device device = c10::kCPU;
};

Side prepare(const CellEvalData& d, const std::vector<std::string>& labels, const c10::Device& device) {
  std::map<std::string, int64_t> id;
  for (size_t i = 0; i < labels.size(); ++i) id[labels[i]] = int64_t(i);
  Side s;
  s.x = &d.x;
  s.device = device;
  s.labelOf.resize(d.perturbations.size());
  s.rows.resize(labels.size());
  for (size_t i = 0; i < s.labelOf.size(); ++i) {
    s.labelOf[i] = id.at(d.perturbations[i]);
    s.rows[size_t(s.labelOf[i])].push_back(int64_t(i));
  }
  // Group sums in float64 straight from the CSR rows.
  const int64_t nLabels = int64_t(labels.size()), genes = d.x.cols;
  at::Tensor sums = at::zeros({nLabels, genes}, at::kDouble);  // [labels, genes]
  at::Tensor counts = at::zeros({nLabels, 1}, at::kDouble);    // [labels, 1]
  double* sum = sums.data_ptr<double>();
  double* count = counts.data_ptr<double>();
  for (int64_t r = 0; r < d.x.rows; ++r) {
    double* out = sum + s.labelOf[size_t(r)] * genes;
    for (int64_t k = d.x.indptr[r]; k < d.x.indptr[r + 1]; ++k) out[d.x.indices[k]] += d.x.data[k];
    count[s.labelOf[size_t(r)]] += 1.0;
  }
  s.bulk = (sums / counts).to(at::kFloat).to(device);  // [labels, genes]
  return s;
}

std::vector<double> row(const at::Tensor& t, int64_t i) {  // t: [rows, cols] float64 CPU
  const at::Tensor r = t[i].contiguous();
  return {r.const_data_ptr<double>(), r.const_data_ptr<double>() + r.numel()};
}

DeTable runDe(const Side& s, const std::vector<std::string>& labels, int64_t control,
              const std::vector<std::string>& genes, const std::vector<std::string>& categories, int threads) {
  DeOptions options;
  options.threads = threads;
  // The CPU reads the CSR directly; other devices sort dense keys on the device.
  DeResult de = s.device.is_cpu() ? differentialExpressionSparse(*s.x, s.labelOf, control, options)
                                  : differentialExpression(data::denseRows(*s.x).to(s.device),
                                                           at::tensor(s.labelOf, at::kLong).to(s.device), control,
                                                           options);
  DeTable t;
  for (int64_t i = 0; i < int64_t(labels.size()); ++i)
    if (i != control) t.targets.push_back(labels[i]);
  t.genes = genes;
  auto cpu = [](const at::Tensor& x) { return x.cpu(); };
  t.de = {cpu(de.targets), cpu(de.targetMean), cpu(de.referenceMean), cpu(de.targetMembership),
          de.referenceMembership, cpu(de.log2FoldChange), cpu(de.percentChange), cpu(de.pValue),
          cpu(de.statistic), cpu(de.fdr)};
  // pdex's row order: the categories' order, else sorted (the order computed in).
  for (const auto& c : categories) {
    const auto it = std::find(t.targets.begin(), t.targets.end(), c);
    if (it != t.targets.end()) t.rowOrder.push_back(it - t.targets.begin());
  }
  if (t.rowOrder.size() != t.targets.size()) {
    t.rowOrder.resize(t.targets.size());
    std::iota(t.rowOrder.begin(), t.rowOrder.end(), 0);
  }
  return t;
}

// cell-eval's DEResults view of a pdex table: fdr and log2FC cast to float32, significant genes
// (fdr < 0.05) per target sorted by |log2FC| descending, ties in gene order (polars' ordinal rank).
struct DeView {
  std::vector<std::vector<float>> fdr, lfc;         // [targets][genes]
  std::vector<std::vector<int64_t>> significant;  // [targets] gene ids, rank order
};

DeView view(const DeTable& t) {
  DeView v;
  const at::Tensor fdr = t.de.fdr.to(at::kFloat).contiguous(), lfc = t.de.log2FoldChange.to(at::kFloat).contiguous();
  const int64_t nt = fdr.size(0), ng = fdr.size(1);
  for (int64_t i = 0; i < nt; ++i) {
    v.fdr.emplace_back(fdr.const_data_ptr<float>() + i * ng, fdr.const_data_ptr<float>() + (i + 1) * ng);
    v.lfc.emplace_back(lfc.const_data_ptr<float>() + i * ng, lfc.const_data_ptr<float>() + (i + 1) * ng);
    std::vector<int64_t> sig;
    for (int64_t g = 0; g < ng; ++g)
      if (v.fdr[i][g] < 0.05f) sig.push_back(g);
    const auto& l = v.lfc[i];  // never NaN: pdex turns 0/0 into 0
    std::stable_sort(sig.begin(), sig.end(), [&](int64_t a, int64_t b) { return std::abs(l[a]) > std::abs(l[b]); });
    v.significant.push_back(std::move(sig));
  }
  return v;
}

// The DE metrics of cell_eval/metrics/_de.py, keyed by metric name, one value per target.
std::map<std::string, Column> deMetrics(const DeView& real, const DeView& pred) {
  const size_t nt = real.fdr.size();
  std::map<std::string, Column> out;
  auto anySig = [](const DeView& v) {
    return std::any_of(v.significant.begin(), v.significant.end(), [](const auto& s) { return !s.empty(); });
  };
  const bool evaluable = anySig(real) && anySig(pred);  // DEComparison.compute_overlap: else all 0
  for (const char* metric : {"overlap", "precision"}) {
    for (int k : {0, 50, 100, 200, 500}) {
      Column& c = out[std::string(metric) + "_at_" + (k ? std::to_string(k) : "N")];
      for (size_t t = 0; t < nt; ++t) {
        const auto &r = real.significant[t], &p = pred.significant[t];
        const size_t base = metric[0] == 'o' ? r.size() : p.size();
        const size_t kEff = k ? std::min<size_t>(k, base) : base;
        if (!evaluable || kEff == 0) {
          c.push_back(0.0);
          continue;
        }
        const std::set<int64_t> top(r.begin(), r.begin() + std::min(kEff, r.size()));
        size_t hits = 0;
        for (size_t i = 0; i < std::min(kEff, p.size()); ++i) hits += top.count(p[i]);
        c.push_back(double(hits) / double(kEff));
      }
    }
  }

  // DESpearmanSignificant: one value over the targets with real significant genes, given to all.
  std::vector<double> nReal, nPred;
  for (size_t t = 0; t < nt; ++t)
    if (!real.significant[t].empty()) nReal.push_back(real.significant[t].size()), nPred.push_back(pred.significant[t].size());
  out["de_spearman_sig"] = Column(nt, nReal.empty() ? 1.0 : spearman(nReal, nPred));

  Column& direction = out["de_direction_match"];
  Column& lfcSpearman = out["de_spearman_lfc_sig"];
  Column& recall = out["de_sig_genes_recall"];
  Column& countReal = out["de_nsig_counts_real"];
  Column& countPred = out["de_nsig_counts_pred"];
  Column& prAuc = out["pr_auc"];
  Column& rocAuc = out["roc_auc"];
  for (size_t t = 0; t < nt; ++t) {
    const auto& sig = real.significant[t];
    countReal.push_back(double(sig.size()));
    countPred.push_back(double(pred.significant[t].size()));
    if (sig.empty()) {  // these metrics only have rows for targets with real significant genes
      direction.push_back(std::nullopt), lfcSpearman.push_back(std::nullopt), recall.push_back(std::nullopt);
    } else {
      auto sign = [](float x) { return x > 0 ? 1 : (x < 0 ? -1 : 0); };
      std::vector<double> lr, lp;
      double same = 0;
      for (int64_t g : sig) {
        same += sign(real.lfc[t][g]) == sign(pred.lfc[t][g]);
        lr.push_back(real.lfc[t][g]), lp.push_back(pred.lfc[t][g]);
      }
      direction.push_back(same / double(sig.size()));
      lfcSpearman.push_back(spearman(lr, lp));
      const std::set<int64_t> predSig(pred.significant[t].begin(), pred.significant[t].end());
      double both = 0;
      for (int64_t g : sig) both += predSig.count(g);
      recall.push_back(both / double(sig.size()));
    }
    // compute_generic_auc: label = real fdr < 0.05, score = -log10(clip(pred fdr, 1e-10, 1)) in float32.
    const size_t ng = real.fdr[t].size();
    std::vector<uint8_t> labels(ng);
    std::vector<float> scores(ng);
    for (size_t g = 0; g < ng; ++g) {
      labels[g] = real.fdr[t][g] < 0.05f;
      scores[g] = -std::log10(std::clamp(pred.fdr[t][g], 1e-10f, 1.0f));
    }
    const Auc auc = aucScores(scores, labels);
    prAuc.push_back(auc.pr), rocAuc.push_back(auc.roc);
  }
  return out;
}

// The AnnData-pair metrics of cell_eval/metrics/_anndata.py over the pseudobulks.
std::map<std::string, Column> bulkMetrics(const Side& real, const Side& pred, const std::vector<int64_t>& perts,
                                          int64_t control, const std::vector<std::string>& labels,
                                          const std::vector<std::string>& genes) {
  const at::Tensor index = at::tensor(perts, at::kLong).to(real.bulk.device());
  // BulkArrays.perturbation_effect: float32 differences, as numpy takes them.
  auto effect = [&](const Side& s) {
    return (s.bulk.index_select(0, index) - s.bulk[control]).to(at::kDouble).cpu();  // [perts, genes]
  };
  const at::Tensor realDelta = effect(real), predDelta = effect(pred);
  const at::Tensor realBulk = real.bulk.index_select(0, index).to(at::kDouble).cpu();  // [perts, genes]
  const at::Tensor predBulk = pred.bulk.index_select(0, index).to(at::kDouble).cpu();  // [perts, genes]
  std::map<std::string, Column> out;
  const at::Tensor err = predBulk - realBulk, errDelta = predDelta - realDelta;  // [perts, genes]
  const at::Tensor mse = err.square().mean(1), mae = err.abs().mean(1);         // [perts]
  const at::Tensor mseD = errDelta.square().mean(1), maeD = errDelta.abs().mean(1);
  const int64_t np = int64_t(perts.size());
  for (int64_t i = 0; i < np; ++i) {
    out["pearson_delta"].push_back(pearson(row(predDelta, i), row(realDelta, i)));
    out["mse"].push_back(mse[i].item<double>());
    out["mae"].push_back(mae[i].item<double>());
    out["mse_delta"].push_back(mseD[i].item<double>());
    out["mae_delta"].push_back(maeD[i].item<double>());
  }

  // discrimination_score: distances from pred effect p to every real effect without p's own gene,
  // score 1 - rank / perts with a stable rank (numpy's argsort is stable at these sizes). sklearn returns
  // float32 euclidean and cosine distances for float32 effects, so those are rounded before ranking.
  for (int64_t p = 0; p < np; ++p) {
    std::vector<int64_t> keep;
    for (int64_t g = 0; g < int64_t(genes.size()); ++g)
      if (genes[g] != labels[perts[p]]) keep.push_back(g);
    const at::Tensor cols = at::tensor(keep, at::kLong);
    const at::Tensor r = realDelta.index_select(1, cols);                   // [perts, kept]
    const at::Tensor q = predDelta[p].index_select(0, cols).unsqueeze(0);  // [1, kept]
    const at::Tensor l1 = (r - q).abs().sum(1);                             // [perts]
    const at::Tensor l2 = (r - q).square().sum(1).sqrt().to(at::kFloat).to(at::kDouble);
    auto unit = [](const at::Tensor& m) {  // sklearn's normalize: zero rows stay zero
      const at::Tensor n = m.norm(2, 1, true);
      return m / at::where(n == 0, at::ones_like(n), n);
    };
    const at::Tensor cosine =
        (1.0 - (unit(r) * unit(q)).sum(1)).clamp(0.0, 2.0).to(at::kFloat).to(at::kDouble);  // [perts]
    for (auto [name, d] : {std::pair{"discrimination_score_l1", l1}, std::pair{"discrimination_score_l2", l2},
                           std::pair{"discrimination_score_cosine", cosine}}) {
      const std::vector<double> dist(d.const_data_ptr<double>(), d.const_data_ptr<double>() + np);
      int64_t rank = 0;
      for (int64_t j = 0; j < np; ++j) rank += dist[j] < dist[p] || (dist[j] == dist[p] && j < p);
      out[name].push_back(1.0 - double(rank) / double(np));
    }
  }
  return out;
}

// Rows per GEMM tile. Every product is a [kTile, genes] block times a [kTile or n_control, genes]
// block, so oneDNN builds its kernels for two shapes only (a new shape costs ~4 ms of JIT, which
// per-label shapes paid hundreds of times).
constexpr int64_t kTile = 128;

// One label's cells for the energy distances: float32 coordinates centred on the file's control
// mean (distances do not change, but |x|^2 + |y|^2 - 2 x.y cancels far less when the norms are the
// size of the distances instead of the size of the expression values) and their squared norms. The
// rows are padded with zero rows to whole tiles; pairs with a padding row are never summed.
struct Cells {
  at::Tensor x;      // [n rounded up to kTile, genes] float32, CPU, contiguous
  at::Tensor norms;  // [n] float64
  int64_t n = 0;
  int64_t padded() const { return x.size(0); }
};

// The cells of `rows`, densified from the CSR minus `centre` in one pass.
Cells centredCells(const data::CsrMatrix& x, const std::vector<int64_t>& rows, const std::vector<double>& centre) {
  const int64_t n = int64_t(rows.size()), genes = x.cols;
  std::vector<float> zeroRow(static_cast<size_t>(genes));  // a row with no entries, centred
  for (int64_t g = 0; g < genes; ++g) zeroRow[size_t(g)] = float(-centre[size_t(g)]);
  Cells c{at::zeros({(n + kTile - 1) / kTile * kTile, genes}, at::kFloat), at::empty({n}, at::kDouble), n};
  float* out = c.x.data_ptr<float>();
  double* norms = c.norms.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    float* row = out + i * genes;
    std::copy(zeroRow.begin(), zeroRow.end(), row);
    const int64_t r = rows[size_t(i)];
    for (int64_t k = x.indptr[r]; k < x.indptr[r + 1]; ++k)
      row[x.indices[k]] = float(double(x.data[k]) - centre[size_t(x.indices[k])]);
    double norm = 0.0;
    for (int64_t g = 0; g < genes; ++g) norm += double(row[g]) * double(row[g]);
    norms[i] = norm;
  }
  return c;
}

// a [n, genes] . b [m, genes]^T -> [n, m] float32 on the CPU. On the CPU it goes through oneDNN's fp32
// GEMM (at::mkldnn_linear): MKL's sgemm takes its AVX2 kernels on AMD CPUs where oneDNN's JIT takes
// AVX-512 (measured 2x on this machine's EPYC); both accumulate in float32.
at::Tensor dotProducts(const at::Tensor& a, const at::Tensor& b, const c10::Device& device) {
  if (!device.is_cpu()) return a.to(device).matmul(b.to(device).t()).cpu();  // [n, m]
  if (!at::hasMKLDNN()) return a.matmul(b.t());
  return at::mkldnn_linear(a.to_mkldnn(), b).to_dense();  // [n, m]
}

// Sum of the Euclidean distances |a_i - b_j| over i in the tile [a0, a0 + kTile) and j in [b0, b1),
// both limited to real rows, and with `same` (a and b the same cells) to j > i only:
// |a|^2 + |b|^2 - 2 a.b with the product in float32 (one GEMM for the tile) and the rest in float64,
// in one pass. The product's rounding, ~1e-7 sqrt(genes) |a| |b|, only matters for pairs much closer
// than their norms: those with |a - b|^2 < 1e-2 (|a|^2 + |b|^2) are recomputed from the coordinates
// in float64, so identical cells are exactly 0 apart.
double sumDistances(const Cells& a, int64_t a0, const Cells& b, int64_t b0, int64_t b1, bool same,
                    const c10::Device& device) {
  constexpr double kNear = 1e-2;
  const int64_t genes = a.x.size(1), m = b1 - b0;
  const at::Tensor dots = dotProducts(a.x.slice(0, a0, a0 + kTile), b.x.slice(0, b0, b1), device).contiguous();  // [kTile, m]
  const float* g = dots.const_data_ptr<float>();
  const double *an = a.norms.const_data_ptr<double>(), *bn = b.norms.const_data_ptr<double>();
  const float *ax = a.x.const_data_ptr<float>(), *bx = b.x.const_data_ptr<float>();
  double sum = 0.0;
  for (int64_t i = a0; i < std::min(a0 + kTile, a.n); ++i) {
    const float* gi = g + (i - a0) * m;  // gi[j - b0]: the product of rows i and j
    double rowSum = 0.0;
    for (int64_t j = same ? std::max(b0, i + 1) : b0; j < std::min(b1, b.n); ++j) {
      const double norms = an[i] + bn[j];
      double sq = norms - 2.0 * double(gi[j - b0]);
      if (sq < kNear * norms) {
        const float *x = ax + i * genes, *y = bx + j * genes;
        sq = 0.0;
        for (int64_t k = 0; k < genes; ++k) sq += (double(x[k]) - double(y[k])) * (double(x[k]) - double(y[k]));
      }
      rowSum += std::sqrt(std::max(sq, 0.0));
    }
    sum += rowSum;
  }
  return sum;
}

// Mean of |x_i - y_j| over all n * m pairs.
double meanCrossDistance(const Cells& x, const Cells& y, const c10::Device& device) {
  double sum = 0.0;
  for (int64_t a0 = 0; a0 < x.n; a0 += kTile) sum += sumDistances(x, a0, y, 0, y.padded(), false, device);
  return sum / (double(x.n) * double(y.n));
}

// Mean of |x_i - x_j| over all n^2 ordered pairs, self-pairs (0) included, as the mean of sklearn's
// pairwise_distances(x) with its zeroed diagonal: the pairs i < j (tiles on and above the diagonal),
// counted twice.
double meanSelfDistance(const Cells& x, const c10::Device& device) {
  double sum = 0.0;
  for (int64_t a0 = 0; a0 < x.n; a0 += kTile)
    for (int64_t b0 = a0; b0 < x.n; b0 += kTile) sum += sumDistances(x, a0, x, b0, b0 + kTile, true, device);
  return 2.0 * sum / (double(x.n) * double(x.n));
}

// edistance: Pearson over perturbations of the energy distances (V-statistic, euclidean) of each
// perturbation's cells to its file's control cells; one value for all perturbations. As in cell-eval,
// the control's mean self-distance is computed once per file and distances go through the matrix
// product (sklearn's pairwise_distances; here sumDistances). Each label's cells are densified from
// the CSR when they are needed, so no [cells, genes] matrix is ever held.
// Where one side's distances are equal up to rounding (|max - min| <= 1e-6 max|d|), the correlation
// is undefined and NaN is returned. This happens when every perturbation gets the same predicted
// cells (a cell-mean baseline): cell-eval then correlates rounding noise, chiefly from sklearn's
// |x|^2 + |y|^2 - 2 x.y distances between identical cells (not exactly 0), and reports an arbitrary
// number that no other implementation or BLAS reproduces.
double pearsonEdistance(const Side& real, const Side& pred, const std::vector<int64_t>& perts, int64_t control,
                        int threads) {
  auto distances = [&](const Side& s) {
    const auto& ctrlRows = s.rows[size_t(control)];
    std::vector<double> centre(size_t(s.x->cols), 0.0);  // the control's mean cell
    for (int64_t r : ctrlRows)
      for (int64_t k = s.x->indptr[r]; k < s.x->indptr[r + 1]; ++k) centre[size_t(s.x->indices[k])] += s.x->data[k];
    for (double& v : centre) v /= double(ctrlRows.size());
    const Cells ctrl = centredCells(*s.x, ctrlRows, centre);
    const double sigmaControl = meanSelfDistance(ctrl, s.device);
    std::vector<double> d(perts.size());
    // One perturbation per thread, each GEMM on its own thread (eval/Parallel.h).
    parallelFor(int64_t(perts.size()), threads, [&](int64_t i) {
      const Cells x = centredCells(*s.x, s.rows[size_t(perts[size_t(i)])], centre);
      d[size_t(i)] = 2.0 * meanCrossDistance(x, ctrl, s.device) - meanSelfDistance(x, s.device) - sigmaControl;
    });
    return d;
  };
  auto nearlyConstant = [](const std::vector<double>& d) {
    const auto [lo, hi] = std::minmax_element(d.begin(), d.end());
    return *hi - *lo <= 1e-6 * std::max(std::abs(*lo), std::abs(*hi));
  };
  const std::vector<double> r = distances(real), p = distances(pred);
  return nearlyConstant(r) || nearlyConstant(p) ? kNaN : pearson(r, p);
}

// The columns of results.csv per profile: cell-eval computes the profile's DE metrics first, then its
// AnnData metrics, each in registry (or profile list) order; de_nsig_counts expands to _real, _pred.
const std::vector<std::string> kDeMetrics = {
    "overlap_at_N",        "overlap_at_50",       "overlap_at_100",      "overlap_at_200",      "overlap_at_500",
    "precision_at_N",      "precision_at_50",     "precision_at_100",    "precision_at_200",    "precision_at_500",
    "de_spearman_sig",     "de_direction_match",  "de_spearman_lfc_sig", "de_sig_genes_recall", "de_nsig_counts_real",
    "de_nsig_counts_pred", "pr_auc",              "roc_auc"};
const std::vector<std::string> kAnndataMetrics = {
    "pearson_delta",           "mse",
    "mae",                     "mse_delta",
    "mae_delta",               "discrimination_score_l1",
    "discrimination_score_l2", "discrimination_score_cosine",
    "pearson_edistance"};

std::vector<std::string> profileColumns(CellEvalProfile profile) {
  std::vector<std::string> cols;
  switch (profile) {
    case CellEvalProfile::Full:
      cols = kDeMetrics;
      cols.insert(cols.end(), kAnndataMetrics.begin(), kAnndataMetrics.end());
      return cols;
    case CellEvalProfile::De:
      return kDeMetrics;
    case CellEvalProfile::Anndata:
      return kAnndataMetrics;
    case CellEvalProfile::Minimal:  // MINIMAL_METRICS, DE ones first
      return {"overlap_at_N", "precision_at_N", "de_nsig_counts_real", "de_nsig_counts_pred",
              "pearson_delta", "mse", "mae", "discrimination_score_l1"};
    case CellEvalProfile::Vcc:
      return {"overlap_at_N", "mae", "discrimination_score_l1"};
    case CellEvalProfile::Pds:
      return {"discrimination_score_l1"};
  }
  return cols;
}

// Shortest round-trip text of a float32 or float64 value.
template <typename T>
std::string formatFloat(T v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  std::string s(buf, end);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // polars marks floats: 13 -> 13.0
  return s;
}

std::ofstream openCsv(const std::string& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path + ": check that the directory exists and is writable");
  return out;
}

}  // namespace

// cell_eval.utils.guess_is_lognorm(validate=True): values with a fractional part above 1e-3 mean
// log1p data, which must lie in [0, 15); otherwise the matrix is taken for counts. Integer-looking
// negative values pass cell-eval's check but would become NaN after log1p, so they are refused too.
bool looksLogNormalised(const data::CsrMatrix& x, const std::string& which, const std::string& source) {
  const std::string where = which + " data (" + source + "): ";
  const auto& v = x.data;
  // numpy compares the float32 fractions with float32(1e-3) (NEP 50).
  const bool decimals =
      std::any_of(v.begin(), v.end(), [](float value) { return value - std::trunc(value) > 1e-3f; });
  const bool implicitZeros = x.nnz() < x.rows * x.cols;
  double lo = implicitZeros ? 0.0 : std::numeric_limits<double>::infinity();
  double hi = implicitZeros ? 0.0 : -std::numeric_limits<double>::infinity();
  for (float value : v) lo = std::min(lo, double(value)), hi = std::max(hi, double(value));
  if (!decimals) {
    if (lo < 0)
      throw std::invalid_argument(where + "integer-looking X has negative values (min " + fixed2(lo) +
                                  "); pass raw counts >= 0 or log1p-normalised data");
    return false;
  }
  if (lo < 0)
    throw std::invalid_argument(where + "Invalid scale: min value " + fixed2(lo) +
                                " is negative. Both Natural or Log1p normalized data must have all values >= 0.");
  if (hi >= 15.0)
    throw std::invalid_argument(where + "Invalid scale: max value " + fixed2(hi) +
                                " exceeds log1p threshold of 15.0; pass raw counts or log1p-normalised data, "
                                "not a mix of scales");
  return true;
}

std::string csvNumber(double v) { return formatFloat(v); }

bool toCellEvalLogSpace(data::CsrMatrix& x, const std::string& which, const std::string& source) {
  if (looksLogNormalised(x, which, source)) return false;
  data::normalizeTotalLog1pInPlace(x);  // sc.pp.normalize_total to the median, then log1p
  return true;
}

CellEvalData cellEvalData(const data::AnnData& adata, const std::string& pertCol) {
  const data::Column& col = adata.obsColumn(pertCol);
  CellEvalData d;
  d.x = adata.X;
  d.genes = adata.var.index;
  d.source = adata.source;
  d.perturbations.reserve(adata.n_obs());
  for (int64_t i = 0; i < adata.n_obs(); ++i) d.perturbations.push_back(col.text(i));
  if (col.kind == data::Column::Kind::Categorical) d.categories = col.categories;
  return d;
}

std::vector<std::pair<std::string, CellEvalData>> splitByCelltype(const data::AnnData& adata,
                                                                  const std::string& pertCol,
                                                                  const std::string& celltypeCol) {
  const CellEvalData all = cellEvalData(adata, pertCol);
  const data::Column& ct = adata.obsColumn(celltypeCol);
  std::vector<std::pair<std::string, std::vector<int64_t>>> groups;
  for (int64_t i = 0; i < adata.n_obs(); ++i) {
    const std::string name = ct.text(i);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == name; });
    if (it == groups.end()) groups.push_back({name, {}}), it = groups.end() - 1;
    it->second.push_back(i);
  }
  std::vector<std::pair<std::string, CellEvalData>> out;
  for (const auto& [name, rows] : groups) {
    CellEvalData d;
    d.genes = all.genes;
    d.categories = all.categories;
    d.source = all.source + " [" + celltypeCol + "=" + name + "]";
    d.x.rows = int64_t(rows.size());
    d.x.cols = all.x.cols;
    d.x.indptr.push_back(0);
    for (int64_t r : rows) {
      d.x.indices.insert(d.x.indices.end(), all.x.indices.begin() + all.x.indptr[r],
                         all.x.indices.begin() + all.x.indptr[r + 1]);
      d.x.data.insert(d.x.data.end(), all.x.data.begin() + all.x.indptr[r], all.x.data.begin() + all.x.indptr[r + 1]);
      d.x.indptr.push_back(int64_t(d.x.data.size()));
      d.perturbations.push_back(all.perturbations[r]);
    }
    out.emplace_back(name, std::move(d));
  }
  return out;
}

CellEvalProfile parseCellEvalProfile(const std::string& name) {
  static const std::map<std::string, CellEvalProfile> kProfiles = {
      {"full", CellEvalProfile::Full}, {"minimal", CellEvalProfile::Minimal}, {"vcc", CellEvalProfile::Vcc},
      {"de", CellEvalProfile::De},     {"anndata", CellEvalProfile::Anndata}, {"pds", CellEvalProfile::Pds}};
  const auto it = kProfiles.find(name);
  if (it == kProfiles.end())
    throw std::invalid_argument("unknown profile '" + name + "': use full, minimal, vcc, de, anndata or pds");
  return it->second;
}

CellEvalReport evaluateCellEval(CellEvalData real, CellEvalData pred, const CellEvalOptions& options) {
  CellEvalReport report;
  StageLog stages("cell-eval");
  // _build_anndata_pair: real is checked and normalised before pred is looked at (so its errors win).
  parallelFor(2, options.threads, [&](int64_t side) {  // side 0 first: its errors win
    if (side == 0) report.realNormalised = toCellEvalLogSpace(real.x, "real", real.source);
    else report.predNormalised = toCellEvalLogSpace(pred.x, "pred", pred.source);
  });
  checkPair(real, pred, options.controlPert);
  stages.lap("checks and log1p");

  const std::vector<std::string> labels = sortedUnique(real.perturbations);
  const int64_t control = std::lower_bound(labels.begin(), labels.end(), options.controlPert) - labels.begin();
  std::vector<int64_t> perts;
  for (int64_t i = 0; i < int64_t(labels.size()); ++i)
    if (i != control) perts.push_back(i);

  Side r, p;
  parallelFor(2, options.threads, [&](int64_t side) {
    (side == 0 ? r : p) = prepare(side == 0 ? real : pred, labels, options.device);
  });
  stages.lap("dense cells and pseudobulks");
  const std::vector<std::string> columns = profileColumns(options.profile);
  auto wants = [&](const std::vector<std::string>& group) {
    return std::any_of(columns.begin(), columns.end(),
                       [&](const auto& c) { return std::find(group.begin(), group.end(), c) != group.end(); });
  };

  std::map<std::string, Column> values;
  if (options.profile != CellEvalProfile::Pds) {  // cell-eval writes the DE tables for every other profile
    report.realDe = runDe(r, labels, control, real.genes, real.categories, options.threads);
    report.predDe = runDe(p, labels, control, pred.genes, pred.categories, options.threads);
    stages.lap("differential expression");
    if (wants(kDeMetrics)) values.merge(deMetrics(view(*report.realDe), view(*report.predDe)));
    stages.lap("DE metrics");
  }
  if (wants(kAnndataMetrics)) values.merge(bulkMetrics(r, p, perts, control, labels, real.genes));
  stages.lap("pseudobulk metrics");
  // scipy's pearsonr raises for fewer than 2 perturbations; cell-eval then drops the metric.
  const bool edistance = std::find(columns.begin(), columns.end(), "pearson_edistance") != columns.end();
  if (edistance && perts.size() >= 2)
    values["pearson_edistance"] = Column(perts.size(), pearsonEdistance(r, p, perts, control, options.threads));
  stages.lap("pearson_edistance");
  if (options.profile == CellEvalProfile::Full || options.profile == CellEvalProfile::Anndata)
    report.omitted.push_back("clustering_agreement");

  MetricTable& t = report.results;
  t.indexName = "perturbation";
  for (int64_t i : perts) t.rows.push_back(labels[i]);
  for (const auto& c : columns) {
    if (!values.count(c)) continue;
    t.columns.push_back(c);
    t.values.push_back(std::move(values[c]));
  }
  return report;
}

MetricTable describeMetrics(const MetricTable& results) {
  MetricTable agg;
  agg.indexName = "statistic";
  agg.rows = {"count", "null_count", "mean", "std", "min", "25%", "50%", "75%", "max"};
  agg.columns = results.columns;
  for (const Column& c : results.values) {
    std::vector<double> v;  // non-null values
    for (const auto& x : c)
      if (x) v.push_back(*x);
    const double n = double(v.size());
    Column s = {n, double(c.size()) - n};
    if (v.empty()) {
      s.resize(agg.rows.size(), std::nullopt);
      agg.values.push_back(s);
      continue;
    }
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
    s.push_back(mean);
    if (v.size() < 2) {
      s.push_back(std::nullopt);
    } else {
      double ss = 0;
      for (double x : v) ss += (x - mean) * (x - mean);
      s.push_back(std::sqrt(ss / (n - 1.0)));
    }
    // NaN sorts last; min/max skip it unless nothing else is there; quantiles take the nearest rank.
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end(), [](double a, double b) { return std::isnan(b) ? !std::isnan(a) : a < b; });
    const size_t finite = std::count_if(sorted.begin(), sorted.end(), [](double x) { return !std::isnan(x); });
    s.push_back(finite ? sorted.front() : kNaN);
    for (double q : {0.25, 0.5, 0.75}) s.push_back(sorted[size_t(std::round(q * (n - 1.0)))]);
    s.push_back(finite ? sorted[finite - 1] : kNaN);
    agg.values.push_back(s);
  }
  return agg;
}

void writeMetricCsv(const MetricTable& table, const std::string& path) {
  std::ofstream out = openCsv(path);
  out << table.indexName;
  for (const auto& c : table.columns) out << ',' << c;
  out << '\n';
  for (size_t i = 0; i < table.rows.size(); ++i) {
    out << table.rows[i];
    for (const auto& c : table.values) out << ',' << (c[i] ? formatFloat(*c[i]) : "");
    out << '\n';
  }
  if (!out) throw std::runtime_error("failed writing " + path + " (disk full?)");
}

void writeDeCsv(const DeTable& table, const std::string& path) {
  std::ofstream out = openCsv(path);
  for (size_t i = 0; i < kPdexColumns.size(); ++i) out << (i ? "," : "") << kPdexColumns[i];
  out << '\n';
  const DeResult& de = table.de;
  auto cell = [](const at::Tensor& t, int64_t i, int64_t g) { return t.const_data_ptr<double>()[i * t.size(1) + g]; };
  const at::Tensor tm = de.targetMean.contiguous(), lfc = de.log2FoldChange.contiguous(),
                   pc = de.percentChange.contiguous(), pv = de.pValue.contiguous(), st = de.statistic.contiguous(),
                   fdr = de.fdr.contiguous(), rm = de.referenceMean.contiguous();
  const int64_t ng = int64_t(table.genes.size());
  for (const int64_t i : table.rowOrder) {
    const int64_t members = de.targetMembership[i].item<int64_t>();
    for (int64_t g = 0; g < ng; ++g) {
      // pdex reports the means as float32.
      out << table.targets[i] << ',' << table.genes[g] << ',' << formatFloat(float(cell(tm, i, g))) << ','
          << formatFloat(float(rm.const_data_ptr<double>()[g])) << ',' << members << ','
          << de.referenceMembership << ',' << formatFloat(cell(lfc, i, g)) << ',' << formatFloat(cell(pc, i, g)) << ','
          << formatFloat(cell(pv, i, g)) << ',' << formatFloat(cell(st, i, g)) << ',' << formatFloat(cell(fdr, i, g))
          << '\n';
    }
  }
  if (!out) throw std::runtime_error("failed writing " + path + " (disk full?)");
}

}  // namespace latentcell::eval
