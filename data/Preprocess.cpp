// Count preprocessing with scanpy's semantics (see Preprocess.h).
#include "data/Preprocess.h"

#include "core/Logging.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <stdexcept>
#include <unordered_map>

namespace latentcell::data {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// np.median of float32 values: the middle value, or the float32 mean of the two middle values.
float medianOf(std::vector<float> v) {
  if (v.empty()) return std::numeric_limits<float>::quiet_NaN();
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const float hi = v[mid];
  if (v.size() % 2 == 1) return hi;
  const float lo = *std::max_element(v.begin(), v.begin() + mid);
  return (lo + hi) / 2.0f;
}

// ---- loess, one predictor (netlib dloess as built into skmisc) --------------------------------

// The local polynomial at q (ehg127): tricube weights over the nf nearest points, columns
// equilibrated, least squares through QR and an SVD of R with skmisc's pseudo-inverse tolerance.
// Returns the value and the slope of the local polynomial at q.
std::pair<double, double> localFit(double q, const std::vector<double>& x, const std::vector<double>& y, int64_t nf,
                                   double span, int degree, std::vector<double>& dist) {
  const int64_t n = static_cast<int64_t>(x.size());
  for (int64_t i = 0; i < n; ++i) dist[i] = (x[i] - q) * (x[i] - q);
  std::vector<double> sorted(dist);
  std::nth_element(sorted.begin(), sorted.begin() + (nf - 1), sorted.end());
  const double rho = sorted[nf - 1] * std::max(1.0, span);
  if (!(rho > 0))
    throw std::invalid_argument(fmt::format("loess: the {} nearest points to {} all coincide with it (span too small)", nf, q));
  const int k = degree + 1;
  std::vector<double> rows, eta;  // design rows w * (1, d, d^2), responses w * y
  for (int64_t i = 0; i < n; ++i) {
    if (!(dist[i] < rho)) continue;  // weight 0 at and beyond the radius
    const double r = std::sqrt(dist[i] / rho);
    const double w = std::sqrt(std::pow(1 - r * r * r, 3));
    const double d = x[i] - q;
    double p = w;
    for (int j = 0; j < k; ++j, p *= d) rows.push_back(p);
    eta.push_back(w * y[i]);
  }
  // Zero rows change nothing but keep QR well defined when fewer points than columns remain.
  while (static_cast<int64_t>(eta.size()) < k) {
    for (int j = 0; j < k; ++j) rows.push_back(0.0);
    eta.push_back(0.0);
  }
  const int64_t m = static_cast<int64_t>(eta.size());
  at::Tensor b = at::tensor(rows, at::kDouble).view({m, k});
  const at::Tensor e = at::tensor(eta, at::kDouble).view({m, 1});
  at::Tensor norms = b.pow(2).sum(0).sqrt();
  norms = at::where(norms.gt(0), norms, at::ones_like(norms));
  b = b / norms;
  const auto [qm, r] = at::linalg_qr(b);
  const at::Tensor qte = qm.transpose(0, 1).matmul(e);
  const auto [u, s, vh] = at::linalg_svd(r);
  const double tol = s[0].item<double>() * 100 * std::numeric_limits<double>::epsilon();
  const at::Tensor inv_s = at::where(s.gt(tol), s.reciprocal(), at::zeros_like(s));
  const at::Tensor coef = vh.transpose(0, 1).matmul(inv_s.unsqueeze(1) * u.transpose(0, 1).matmul(qte)).squeeze(1) / norms;
  const double* c = coef.data_ptr<double>();
  return {c[0], k > 1 ? c[1] : 0.0};
}

// One cell of the k-d tree over the sorted x's (ehg124, one dimension): points [l, u] (1-based into
// the sorted x's), bounded by vertices lo_v and hi_v; split at xi into children left/right.
struct KdCell {
  int64_t l, u;
  int64_t lo_v, hi_v;
  bool leaf = true;
  double xi = 0;
  int64_t left = -1, right = -1;
};

}  // namespace

std::vector<double> loessFit(const std::vector<double>& x, const std::vector<double>& y, double span, int degree) {
  const int64_t n = static_cast<int64_t>(x.size());
  if (static_cast<int64_t>(y.size()) != n)
    throw std::invalid_argument(fmt::format("loess: x has {} values but y has {}", n, y.size()));
  if (degree < 0 || degree > 2) throw std::invalid_argument(fmt::format("loess: degree must be 0, 1 or 2, got {}", degree));
  if (!(span > 0)) throw std::invalid_argument(fmt::format("loess: span must be > 0, got {}", span));
  if (n == 0) return {};
  const int64_t nf = std::min<int64_t>(n, static_cast<int64_t>(std::floor(n * span + 1e-5)));
  const int k = degree + 1;
  if (nf - 1 < k)
    throw std::invalid_argument(fmt::format(
        "loess: span {} over {} points leaves {} neighbours, too few for a degree {} fit (need {})", span, n, nf,
        degree, k + 1));

  // The k-d tree on the sorted x's. Parameters as skmisc sets them: cell = 0.2, so a cell with at
  // most floor(n * span * 0.2) points is a leaf; nvmax = ncmax = max(200, n).
  std::vector<double> xs(x);
  std::sort(xs.begin(), xs.end());
  const int64_t fc = static_cast<int64_t>(std::floor(static_cast<double>(n) * (span * 0.2)));
  const int64_t nvmax = std::max<int64_t>(200, n);
  // Bounding box, widened by 0.5% (ehg126).
  const double lo = xs.front(), hi = xs.back();
  const double margin = 0.005 * std::max(hi - lo, 1e-10 * std::max(std::fabs(lo), std::fabs(hi)) + 1e-30);
  std::vector<double> vx = {lo - margin, hi + margin};
  std::vector<KdCell> cells = {KdCell{1, n, 0, 1}};
  for (size_t p = 0; p < cells.size(); ++p) {
    KdCell cell = cells[p];
    const int64_t l = cell.l, u = cell.u;
    if (u - l + 1 <= fc || vx[cell.hi_v] - vx[cell.lo_v] <= 0) continue;
    if (nvmax < static_cast<int64_t>(cells.size()) + 2 || nvmax < static_cast<int64_t>(vx.size()) + 1) continue;
    auto at = [&](int64_t i) { return xs[i - 1]; };
    // Split at the median; with ties, at the nearest position (trying m+1 before m-1, then m+2, ...)
    // where consecutive values differ, so that equal x's stay in one cell.
    int64_t m = (l + u) / 2;
    for (int64_t offset = 0;;) {
      if (m + offset >= u || m + offset < l) break;
      if (at(m + offset) != at(m + offset + 1)) {
        m += offset;
        break;
      }
      offset = -offset;
      if (offset >= 0) offset += 1;
    }
    const double xi = at(m);
    if (vx[cell.lo_v] == xi || vx[cell.hi_v] == xi) continue;
    vx.push_back(xi);
    const int64_t mid_v = static_cast<int64_t>(vx.size()) - 1;
    cells[p].leaf = false;
    cells[p].xi = xi;
    cells[p].left = static_cast<int64_t>(cells.size());
    cells[p].right = cells[p].left + 1;
    cells.push_back(KdCell{l, m, cell.lo_v, mid_v});
    cells.push_back(KdCell{m + 1, u, mid_v, cell.hi_v});
  }

  // The local fit (value and slope) at every vertex.
  std::vector<double> dist(n), value(vx.size()), slope(vx.size());
  for (size_t v = 0; v < vx.size(); ++v) std::tie(value[v], slope[v]) = localFit(vx[v], x, y, nf, span, degree, dist);

  // Cubic Hermite interpolation within the leaf that holds each x (ehg128): ties go left.
  std::vector<double> fitted(n);
  for (int64_t i = 0; i < n; ++i) {
    const double z = x[i];
    int64_t c = 0;
    while (!cells[c].leaf) c = z <= cells[c].xi ? cells[c].left : cells[c].right;
    const int64_t a = cells[c].lo_v, b = cells[c].hi_v;
    const double width = vx[b] - vx[a];
    const double h = (z - vx[a]) / width;
    const double phi0 = (1 - h) * (1 - h) * (1 + 2 * h), phi1 = h * h * (3 - 2 * h);
    const double psi0 = h * (1 - h) * (1 - h), psi1 = h * h * (h - 1);
    fitted[i] = phi0 * value[a] + phi1 * value[b] + (psi0 * slope[a] + psi1 * slope[b]) * width;
  }
  return fitted;
}

std::vector<double> librarySizes(const CsrMatrix& counts) {
  std::vector<double> out(counts.rows, 0.0);
  for (int64_t r = 0; r < counts.rows; ++r)
    for (int64_t k = counts.indptr[r]; k < counts.indptr[r + 1]; ++k) out[r] += counts.data[k];
  return out;
}

namespace {

double medianOfLibrarySizes(const std::vector<double>& librarySizes, MedianOf median_of) {
  std::vector<float> sizes;
  for (double s : librarySizes)
    if (median_of == MedianOf::AllCells || s > 0) sizes.push_back(static_cast<float>(s));
  if (sizes.empty())
    throw std::invalid_argument(fmt::format("normalize_total: no cell of the {} has any counts, so there is no median "
                                            "library size; pass a target sum",
                                            librarySizes.size()));
  return medianOf(std::move(sizes));
}

// Each row's divisor: its library size (stored as float32) over the target, 0 for empty cells, as
// scanpy's float32 steps compute it.
std::vector<float> normalisationFactors(const CsrMatrix& x, std::optional<double> target_sum, MedianOf median_of) {
  if (target_sum && !(*target_sum > 0))
    throw std::invalid_argument(fmt::format("normalize_total: target sum must be > 0, got {}", *target_sum));
  const std::vector<double> sizes = librarySizes(x);
  const float target = static_cast<float>(target_sum ? *target_sum : medianOfLibrarySizes(sizes, median_of));
  if (!(target > 0))
    throw std::invalid_argument(fmt::format("normalize_total: the median library size of the {} cells is 0 (at least "
                                            "half have no counts); pass a target sum or take the median over "
                                            "nonzero cells",
                                            x.rows));
  std::vector<float> factors(sizes.size());
  int64_t empty = 0;
  for (size_t r = 0; r < sizes.size(); ++r) {
    factors[r] = static_cast<float>(sizes[r]) / target;
    empty += factors[r] == 0;
  }
  if (empty > 0) core::logWarn("normalize_total: {} of {} cells have zero counts and stay zero", empty, x.rows);
  return factors;
}

}  // namespace

double medianLibrarySize(const CsrMatrix& counts, MedianOf median_of) {
  return medianOfLibrarySizes(librarySizes(counts), median_of);
}

void normalizeTotalInPlace(CsrMatrix& x, std::optional<double> target_sum, MedianOf median_of) {
  const std::vector<float> factors = normalisationFactors(x, target_sum, median_of);
  for (int64_t r = 0; r < x.rows; ++r) {
    if (factors[r] == 0) continue;
    for (int64_t k = x.indptr[r]; k < x.indptr[r + 1]; ++k) x.data[k] = x.data[k] / factors[r];
  }
}

void log1pInPlace(CsrMatrix& x) {
  for (float& v : x.data) v = std::log1p(v);
}

void normalizeTotalLog1pInPlace(CsrMatrix& x, std::optional<double> target_sum, MedianOf median_of) {
  const std::vector<float> factors = normalisationFactors(x, target_sum, median_of);
  // log1p(count / factor) depends on the row's factor and the count only, and a cell's counts are
  // mostly a few small integers: their values are computed once per row (same float32 steps).
  constexpr int kSmallCounts = 64;
  float cached[kSmallCounts];
  for (int64_t r = 0; r < x.rows; ++r) {
    const float factor = factors[r];
    std::fill(std::begin(cached), std::end(cached), -1.0f);  // log1p of a count >= 0 is never negative
    for (int64_t k = x.indptr[r]; k < x.indptr[r + 1]; ++k) {
      const float v = x.data[k];
      const float scaled = factor == 0 ? v : v / factor;
      const int small = static_cast<int>(v);
      if (v >= 0 && v < kSmallCounts && float(small) == v) {
        if (cached[small] < 0) cached[small] = std::log1p(scaled);
        x.data[k] = cached[small];
      } else {
        x.data[k] = std::log1p(scaled);
      }
    }
  }
}

CsrMatrix normalizeTotal(const CsrMatrix& counts, std::optional<double> target_sum, MedianOf median_of) {
  CsrMatrix out = counts;
  normalizeTotalInPlace(out, target_sum, median_of);
  return out;
}

CsrMatrix log1p(const CsrMatrix& values) {
  CsrMatrix out = values;
  log1pInPlace(out);
  return out;
}

HvgResult highlyVariableGenesSeuratV3(const CsrMatrix& counts, const HvgOptions& options) {
  const int64_t n_cells = counts.rows, n_genes = counts.cols;
  if (options.n_top_genes < 1)
    throw std::invalid_argument(fmt::format("highly_variable_genes: n_top_genes must be >= 1, got {}", options.n_top_genes));
  if (!options.batch.empty() && static_cast<int64_t>(options.batch.size()) != n_cells)
    throw std::invalid_argument(fmt::format("highly_variable_genes: {} batch codes for {} cells", options.batch.size(), n_cells));
  for (float v : counts.data)
    if (v < 0 || v != std::floor(v)) {
      core::logWarn("highly_variable_genes: flavour seurat_v3 expects raw counts, but found the value {}", v);
      break;
    }

  // Mean and unbiased variance per gene over `rows`, with scanpy's operation order.
  auto meanVar = [&](const std::vector<int64_t>& rows, std::vector<double>& mean, std::vector<double>& var) {
    const int64_t n = static_cast<int64_t>(rows.size());
    std::vector<double> sum(n_genes, 0.0), sq(n_genes, 0.0);
    for (int64_t r : rows)
      for (int64_t k = counts.indptr[r]; k < counts.indptr[r + 1]; ++k) {
        const float v = counts.data[k];
        sum[counts.indices[k]] += v;
        sq[counts.indices[k]] += v * v;  // float32 product, as numba computes it
      }
    mean.assign(n_genes, 0.0);
    var.assign(n_genes, 0.0);
    for (int64_t g = 0; g < n_genes; ++g) {
      mean[g] = sum[g] / n;
      var[g] = sq[g] / n - mean[g] * mean[g];
      if (n != 1) var[g] *= static_cast<double>(n) / static_cast<double>(n - 1);
    }
  };

  std::map<int64_t, std::vector<int64_t>> batches;  // sorted like np.unique
  for (int64_t r = 0; r < n_cells; ++r) batches[options.batch.empty() ? 0 : options.batch[r]].push_back(r);
  if (batches.empty()) throw std::invalid_argument("highly_variable_genes: the matrix has no cells");

  HvgResult res;
  std::vector<int64_t> all(n_cells);
  std::iota(all.begin(), all.end(), 0);
  meanVar(all, res.means, res.variances);

  std::vector<std::vector<double>> ranks;  // per batch, rank of every gene
  res.variances_norm.assign(n_genes, 0.0);
  for (const auto& [code, rows] : batches) {
    const int64_t n = static_cast<int64_t>(rows.size());
    if (n < 2)
      throw std::invalid_argument(fmt::format("highly_variable_genes: batch {} has {} cell(s); a variance needs two", code, n));
    std::vector<double> mean, var;
    meanVar(rows, mean, var);
    std::vector<double> lx, ly;
    std::vector<int64_t> varying;
    for (int64_t g = 0; g < n_genes; ++g)
      if (var[g] > 0) {
        varying.push_back(g);
        lx.push_back(std::log10(mean[g]));
        ly.push_back(std::log10(var[g]));
      }
    std::vector<double> fit_log_var(n_genes, 0.0);
    std::vector<double> fitted;
    try {
      fitted = loessFit(lx, ly, options.span, 2);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("highly_variable_genes: batch {} ({} genes with nonzero variance): {}",
                                              code, lx.size(), e.what()));
    }
    for (size_t i = 0; i < varying.size(); ++i) fit_log_var[varying[i]] = fitted[i];

    // Standardised variance with values clipped at mean + sqrt(n) * expected sd, as Seurat does.
    std::vector<double> reg_std(n_genes), clip(n_genes), sum(n_genes, 0.0), sq(n_genes, 0.0);
    const double vmax = std::sqrt(static_cast<double>(n));
    for (int64_t g = 0; g < n_genes; ++g) {
      reg_std[g] = std::sqrt(std::pow(10.0, fit_log_var[g]));
      clip[g] = reg_std[g] * vmax + mean[g];
    }
    for (int64_t r : rows)
      for (int64_t k = counts.indptr[r]; k < counts.indptr[r + 1]; ++k) {
        const int32_t g = counts.indices[k];
        const double e = std::min(static_cast<double>(counts.data[k]), clip[g]);
        sq[g] += e * e;
        sum[g] += e;
      }
    std::vector<double> norm(n_genes);
    for (int64_t g = 0; g < n_genes; ++g) {
      norm[g] = (1 / ((n - 1) * (reg_std[g] * reg_std[g]))) * ((n * (mean[g] * mean[g])) + sq[g] - 2 * sum[g] * mean[g]);
      res.variances_norm[g] += norm[g] / static_cast<double>(batches.size());
    }
    std::vector<int64_t> order(n_genes);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return norm[a] > norm[b]; });
    std::vector<double> rank(n_genes);
    for (int64_t i = 0; i < n_genes; ++i) rank[order[i]] = static_cast<double>(i);
    ranks.push_back(std::move(rank));
  }

  // Combine batches as Seurat's SelectIntegrationFeatures: median rank among the batches where the
  // gene is in the top n, and in how many batches it is.
  res.rank.assign(n_genes, kNaN);
  res.nbatches.assign(n_genes, 0);
  for (int64_t g = 0; g < n_genes; ++g) {
    std::vector<double> top;
    for (const auto& rank : ranks)
      if (rank[g] < static_cast<double>(options.n_top_genes)) top.push_back(rank[g]);
    res.nbatches[g] = static_cast<int64_t>(top.size());
    if (top.empty()) continue;
    std::sort(top.begin(), top.end());
    const size_t mid = top.size() / 2;
    res.rank[g] = top.size() % 2 ? top[mid] : (top[mid - 1] + top[mid]) / 2;
  }
  std::vector<int64_t> order(n_genes);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const bool na = std::isnan(res.rank[a]), nb = std::isnan(res.rank[b]);
    if (na != nb) return nb;  // NaN last
    if (!na && res.rank[a] != res.rank[b]) return res.rank[a] < res.rank[b];
    return res.nbatches[a] > res.nbatches[b];
  });
  const int64_t n_top = std::min(options.n_top_genes, n_genes);
  res.selected.assign(order.begin(), order.begin() + n_top);
  res.highly_variable.assign(n_genes, 0);
  for (int64_t g : res.selected) res.highly_variable[g] = 1;
  return res;
}

GeneMapping mapGenes(const std::vector<std::string>& var_names, const std::vector<std::string>& wanted, bool lenient) {
  std::unordered_map<std::string, int64_t> where;
  for (size_t i = 0; i < var_names.size(); ++i)
    if (!where.emplace(var_names[i], static_cast<int64_t>(i)).second) where[var_names[i]] = -2;
  GeneMapping m;
  m.source.reserve(wanted.size());
  for (const auto& g : wanted) {
    const auto it = where.find(g);
    if (it == where.end()) {
      m.missing.push_back(g);
      m.source.push_back(-1);
    } else if (it->second == -2) {
      throw std::invalid_argument(fmt::format("gene '{}' occurs more than once in the data's var names", g));
    } else {
      m.source.push_back(it->second);
    }
  }
  if (!m.missing.empty()) {
    std::string first;
    for (size_t i = 0; i < std::min<size_t>(10, m.missing.size()); ++i) first += (i ? ", " : "") + m.missing[i];
    if (m.missing.size() > 10) first += ", ...";
    const std::string what =
        fmt::format("{} of {} genes are missing from the data ({})", m.missing.size(), wanted.size(), first);
    if (!lenient) throw std::invalid_argument(what + "; allow missing genes to zero-fill them");
    core::logWarn("{}; they are zero-filled", what);
  }
  return m;
}

CsrMatrix selectGenes(const CsrMatrix& counts, const std::vector<int64_t>& columns) {
  // The new position(s) of every old column; a column may be selected more than once.
  std::vector<std::vector<int32_t>> target(counts.cols);
  for (size_t j = 0; j < columns.size(); ++j) {
    const int64_t c = columns[j];
    if (c < -1 || c >= counts.cols)
      throw std::out_of_range(fmt::format("select genes: column {} is outside the matrix of {} genes", c, counts.cols));
    if (c >= 0) target[c].push_back(static_cast<int32_t>(j));
  }
  CsrMatrix out;
  out.rows = counts.rows;
  out.cols = static_cast<int64_t>(columns.size());
  out.indptr.assign(1, 0);
  std::vector<std::pair<int32_t, float>> row;
  for (int64_t r = 0; r < counts.rows; ++r) {
    row.clear();
    for (int64_t k = counts.indptr[r]; k < counts.indptr[r + 1]; ++k)
      for (int32_t j : target[counts.indices[k]]) row.emplace_back(j, counts.data[k]);
    std::sort(row.begin(), row.end());
    for (const auto& [j, v] : row) {
      out.indices.push_back(j);
      out.data.push_back(v);
    }
    out.indptr.push_back(static_cast<int64_t>(out.data.size()));
  }
  return out;
}

CsrMatrix selectGenes(const CsrMatrix& counts, const GeneMapping& mapping) { return selectGenes(counts, mapping.source); }

at::Tensor denseRows(const CsrMatrix& values, const std::vector<int64_t>& rows) {
  const int64_t n = rows.empty() ? values.rows : static_cast<int64_t>(rows.size());
  at::Tensor out = at::zeros({n, values.cols}, at::kFloat);
  float* p = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = rows.empty() ? i : rows[i];
    if (r < 0 || r >= values.rows)
      throw std::out_of_range(fmt::format("dense rows: row {} is outside the matrix of {} cells", r, values.rows));
    for (int64_t k = values.indptr[r]; k < values.indptr[r + 1]; ++k) p[i * values.cols + values.indices[k]] = values.data[k];
  }
  return out;
}

}  // namespace latentcell::data
