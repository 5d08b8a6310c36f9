// Distribution distances (see DistributionMetrics.h).
//
// Pairwise quantities (MMD kernel sums, energy distances) are accumulated over row blocks of the
// distance matrix so that 10^4 x 10^4 cell comparisons never hold the whole float64 matrix.
// Distances come from cdist without the matrix-multiply expansion: |x|^2 + |y|^2 - 2 x.y cancels
// catastrophically for nearby points, which the narrow kernels (sigma = 0.01) would amplify.
//
// The exact transport problem is solved by LEMON's network simplex on the complete bipartite
// graph. Uniform weights 1/n and 1/m are not integral, so supplies are scaled to m/g at each source
// and n/g at each sink (g = gcd(n, m)): integral flows then solve exactly the same LP, and the
// optimum is the flow-weighted cost divided by the total mass n*m/g. Costs are quantised to int64
// for the solver: with double costs LEMON's pivot rule (enter on any reduced cost < 0, no
// tolerance, unlike POT's patched copy) takes rounding noise for improvement and cycles forever on
// degenerate problems. The grid is as fine as int64 allows, (n + m) * max|cost| <= 2^60 (reduced
// costs then stay below 2^63 next to LEMON's artificial cost 2^62), and the plan it finds is priced
// with the real costs; it is off the true optimum by at most 2^-60 (n + m) max|cost| (it matched
// ot.emd2 to 2e-15 on 1500 x 1800 heavy-tailed points).
//
// LEMON_ONLY_TEMPLATES makes LEMON header-only (its one out-of-line symbol, lemon::INVALID, becomes
// an internal constant), so nothing needs to link liblemon.
#include "eval/DistributionMetrics.h"

#include "eval/Parallel.h"

#include <ATen/ATen.h>

#define LEMON_ONLY_TEMPLATES
#include <lemon/network_simplex.h>
#include <lemon/static_graph.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

namespace latentcell::eval {

namespace {

// Distances held at once by the blocked pairwise sums (16M float64 = 128 MiB).
constexpr int64_t kBlockElements = int64_t{1} << 24;

// Checks a [cells, features] input and returns it as float64 on its device.
at::Tensor asCells(const at::Tensor& x, const char* what, const char* name, int64_t minCells = 1) {
  if (!x.defined() || x.dim() != 2)
    throw std::invalid_argument(std::string(what) + ": " + name +
                                " must be a 2-D [cells, features] tensor");
  if (x.size(0) < minCells)
    throw std::invalid_argument(std::string(what) + ": " + name + " needs at least " +
                                std::to_string(minCells) + " cells, got " +
                                std::to_string(x.size(0)));
  at::Tensor d = x.to(at::kDouble);
  if (!at::isfinite(d).all().item<bool>())
    throw std::invalid_argument(std::string(what) + ": " + name + " has NaN or infinite values");
  return d;
}

std::pair<at::Tensor, at::Tensor> asPair(const at::Tensor& x, const at::Tensor& y, const char* what,
                                         int64_t minCells = 1) {
  at::Tensor a = asCells(x, what, "x", minCells);
  at::Tensor b = asCells(y, what, "y", minCells);
  if (a.size(1) != b.size(1))
    throw std::invalid_argument(std::string(what) + ": x has " + std::to_string(a.size(1)) +
                                " features but y has " + std::to_string(b.size(1)));
  if (a.device() != b.device())
    throw std::invalid_argument(std::string(what) + ": x and y are on different devices");
  return {a, b};
}

// Euclidean distances; Exact is cdist's compute_mode 2 (donot_use_mm_for_euclid_dist), MatrixProduct
// its compute_mode 1 (use_mm_for_euclid_dist).
at::Tensor distances(const at::Tensor& x, const at::Tensor& y,
                     DistanceComputation how = DistanceComputation::Exact) {
  return at::cdist(x, y, 2.0, how == DistanceComputation::Exact ? 2 : 1);  // [n, m]
}

// Sum over all pairs (i, j) of f(|x_i - y_j|), in row blocks of the distance matrix.
template <typename F>
double pairSum(const at::Tensor& x, const at::Tensor& y, F&& f,
               DistanceComputation how = DistanceComputation::Exact) {
  const int64_t block = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(1, y.size(0)));
  at::Tensor total = at::zeros({}, x.options());
  for (int64_t start = 0; start < x.size(0); start += block) {
    total += f(distances(x.slice(0, start, start + block), y, how)).sum();  // [block, m] -> []
  }
  return total.item<double>();
}

// Sum over all pairs of the multi-bandwidth RBF kernel.
double kernelSum(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& sigmas) {
  return pairSum(x, y, [&](const at::Tensor& d) {
    at::Tensor sq = d.square();  // [block, m]
    at::Tensor k = at::zeros_like(sq);
    for (double sigma : sigmas) k += at::exp(sq * (-1.0 / (2.0 * sigma * sigma)));
    return k;
  });
}

void checkSigmas(const std::vector<double>& sigmas, const char* what) {
  if (sigmas.empty()) throw std::invalid_argument(std::string(what) + ": no kernel bandwidths");
  for (double s : sigmas)
    if (!(s > 0.0) || !std::isfinite(s))
      throw std::invalid_argument(std::string(what) + ": bandwidth " + std::to_string(s) +
                                  " is not a positive finite number");
}

// Mean and ddof=1 covariance of [cells, features] float64 rows.
std::pair<at::Tensor, at::Tensor> moments(const at::Tensor& x) {
  at::Tensor mu = x.mean(0);                                 // [d]
  at::Tensor c = x - mu;                                     // [n, d]
  at::Tensor cov = c.t().matmul(c) / double(x.size(0) - 1);  // [d, d]
  return {mu, (cov + cov.t()) * 0.5};
}

}  // namespace

// Rows of a [cells, features] input converted to float64 a block at a time, so that large float32
// inputs never exist twice in float64.
constexpr int64_t kPcaBlockRows = 4096;

void checkFeatures(const at::Tensor& x, const char* what, const char* name) {
  if (!x.defined() || x.dim() != 2)
    throw std::invalid_argument(std::string(what) + ": " + name + " must be a 2-D [cells, features] tensor");
}

at::Tensor finiteBlock(const RowBlocks& rows, int64_t start, int64_t cells, const char* what) {  // [<= block, d] float64
  at::Tensor b = rows(start, std::min(cells, start + kPcaBlockRows)).to(at::kDouble);
  if (!at::isfinite(b).all().item<bool>())
    throw std::invalid_argument(std::string(what) + ": the cells have NaN or infinite values");
  return b;
}

RowBlocks slices(const at::Tensor& x) {
  return [&x](int64_t start, int64_t end) { return x.slice(0, start, end); };
}

at::Tensor Pca::transform(const at::Tensor& x) const {
  checkFeatures(x, "Pca::transform", "x");
  if (x.size(1) != (mean.defined() ? mean.size(0) : x.size(1)))
    throw std::invalid_argument("Pca::transform: x has " + std::to_string(x.size(1)) +
                                " features but the PCA was fitted on " +
                                std::to_string(mean.size(0)));
  return transform(x.size(0), slices(x));
}

at::Tensor Pca::transform(int64_t cells, const RowBlocks& rows) const {
  if (!mean.defined()) throw std::logic_error("Pca::transform: the PCA has not been fitted");
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < cells; start += kPcaBlockRows) {
    const at::Tensor block = finiteBlock(rows, start, cells, "Pca::transform");  // [block, d]
    if (block.size(1) != mean.size(0))
      throw std::invalid_argument("Pca::transform: the cells have " + std::to_string(block.size(1)) +
                                  " features but the PCA was fitted on " + std::to_string(mean.size(0)));
    const at::Tensor mu = mean.to(block.device()), loadings = components.to(block.device()).t();  // [d], [d, k]
    parts.push_back((block - mu).matmul(loadings));  // [block, k]
  }
  return parts.empty() ? at::empty({0, components.size(0)}, mean.options()) : at::cat(parts);  // [cells, k]
}

namespace {

// svd_flip(u_based_decision=False): make each row's largest-magnitude entry positive. A zero
// row keeps sign +1 (sklearn would zero it; that only happens for rank-deficient data).
at::Tensor flipSigns(const at::Tensor& v) {  // [k, d]
  at::Tensor pivot = v.gather(1, v.abs().argmax(1, /*keepdim=*/true));  // [k, 1]
  return at::where(pivot < 0, -v, v);
}

}  // namespace

Pca fitPcaCovariance(int64_t n, int64_t d, const RowBlocks& rows, int64_t k, int threads) {
  if (n < 2) throw std::invalid_argument("fitPca: real needs at least 2 cells, got " + std::to_string(n));
  if (k < 1 || k > std::min(n, d))
    throw std::invalid_argument("fitPca: k = " + std::to_string(k) + " must be in [1, " +
                                std::to_string(std::min(n, d)) + "] for " + std::to_string(n) + " x " +
                                std::to_string(d) + " data");
  // Mean, then the centred Gram matrix, both summed over row blocks (in parallel on the CPU).
  const int64_t blocks = (n + kPcaBlockRows - 1) / kPcaBlockRows;
  at::Tensor sum;  // [d] float64 on the blocks' device
  for (int64_t b = 0; b < blocks; ++b) {
    const at::Tensor part = finiteBlock(rows, b * kPcaBlockRows, n, "fitPca").sum(0);
    sum = sum.defined() ? sum + part : part;
  }
  Pca pca;
  pca.mean = sum / double(n);  // [d]
  at::Tensor gram = at::zeros({d, d}, sum.options());
  std::mutex gramMutex;
  auto addBlock = [&](int64_t b) {
    const at::Tensor c = finiteBlock(rows, b * kPcaBlockRows, n, "fitPca") - pca.mean;  // [block, d]
    const at::Tensor part = c.t().matmul(c);                                              // [d, d]
    const std::lock_guard<std::mutex> lock(gramMutex);
    gram += part;
  };
  parallelFor(blocks, sum.is_cpu() ? threads : 1, addBlock);
  auto [values, vectors] = at::linalg_eigh((gram + gram.t()) * 0.5);  // ascending
  pca.components = flipSigns(vectors.flip(1).slice(1, 0, k).t());     // [k, d]
  pca.explainedVariance = values.flip(0).slice(0, 0, k).clamp_min(0.0) / double(n - 1);  // [k]
  return pca;
}

Pca fitPca(const at::Tensor& real, int64_t k, PcaSolver solver, int threads) {
  checkFeatures(real, "fitPca", "real");
  const int64_t n = real.size(0), d = real.size(1);
  if (n < 2) throw std::invalid_argument("fitPca: real needs at least 2 cells, got " + std::to_string(n));
  const int64_t rank = std::min(n, d);
  if (k < 1 || k > rank)
    throw std::invalid_argument("fitPca: k = " + std::to_string(k) + " must be in [1, " +
                                std::to_string(rank) + "] for " + std::to_string(n) +
                                " x " + std::to_string(d) + " data");
  if (solver == PcaSolver::Auto)
    solver = n >= 2 * d && d >= 256 ? PcaSolver::CovarianceEigh : PcaSolver::Svd;
  if (solver == PcaSolver::CovarianceEigh) return fitPcaCovariance(n, d, slices(real), k, threads);
  Pca pca;
  const at::Tensor x = asCells(real, "fitPca", "real", 2);
  pca.mean = x.mean(0);  // [d]
  auto [u, s, vh] = at::linalg_svd(x - pca.mean, /*full_matrices=*/false);
  pca.components = flipSigns(vh.slice(0, 0, k));                          // [k, d]
  pca.explainedVariance = s.slice(0, 0, k).square() / double(n - 1);     // [k]
  return pca;
}

double exactTransportCost(const at::Tensor& cost) {
  if (!cost.defined() || cost.dim() != 2 || cost.size(0) < 1 || cost.size(1) < 1)
    throw std::invalid_argument("exactTransportCost: cost must be a non-empty 2-D [n, m] tensor");
  const at::Tensor c = cost.to(at::kCPU, at::kDouble).contiguous();  // [n, m]
  if (!at::isfinite(c).all().item<bool>())
    throw std::invalid_argument("exactTransportCost: cost has NaN or infinite values");
  const int64_t n = c.size(0), m = c.size(1);
  if (n * m >= INT_MAX)
    throw std::invalid_argument("exactTransportCost: " + std::to_string(n) + " x " +
                                std::to_string(m) +
                                " needs more than 2^31 arcs; subsample the cells");
  const double* values = c.const_data_ptr<double>();

  using Graph = lemon::StaticDigraph;
  Graph graph;
  {
    std::vector<std::pair<int, int>> arcs;  // sources 0..n-1, sinks n..n+m-1, sorted by source
    arcs.reserve(static_cast<size_t>(n * m));
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < m; ++j) arcs.emplace_back(i, static_cast<int>(n) + j);
    graph.build(static_cast<int>(n + m), arcs.begin(), arcs.end());
  }
  // StaticDigraph numbers arcs in build order, so arc a is (a / m, a % m).
  const double maxCost = c.abs().max().item<double>();
  const double scale = maxCost > 0.0 ? std::ldexp(1.0, 60) / (double(n + m) * maxCost) : 1.0;
  Graph::ArcMap<int64_t> arcCost(graph);
  for (int a = 0; a < n * m; ++a) arcCost[Graph::arc(a)] = std::llround(values[a] * scale);
  const int64_t g = std::gcd(n, m);
  Graph::NodeMap<int64_t> supply(graph);
  for (int i = 0; i < n; ++i) supply[Graph::node(i)] = m / g;
  for (int j = 0; j < m; ++j) supply[Graph::node(static_cast<int>(n) + j)] = -(n / g);

  using Simplex = lemon::NetworkSimplex<Graph, int64_t, int64_t>;
  Simplex simplex(graph);
  if (simplex.costMap(arcCost).supplyMap(supply).run() != Simplex::OPTIMAL)
    throw std::runtime_error("exactTransportCost: the network simplex found no optimal plan");
  long double total = 0.0L;
  for (int a = 0; a < n * m; ++a) {
    const int64_t f = simplex.flow(Graph::arc(a));
    if (f != 0) total += static_cast<long double>(f) * values[a];
  }
  return static_cast<double>(total / (static_cast<long double>(n) * m / g));
}

double wasserstein1(const at::Tensor& x, const at::Tensor& y) {
  auto [a, b] = asPair(x, y, "wasserstein1");
  return exactTransportCost(distances(a, b));
}

double wasserstein2(const at::Tensor& x, const at::Tensor& y) {
  auto [a, b] = asPair(x, y, "wasserstein2");
  return std::sqrt(std::max(0.0, exactTransportCost(distances(a, b).square())));
}

double mmdRbfBiased(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& sigmas) {
  checkSigmas(sigmas, "mmdRbfBiased");
  auto [a, b] = asPair(x, y, "mmdRbfBiased");
  const int64_t n = std::min(a.size(0), b.size(0));
  a = a.slice(0, 0, n);
  b = b.slice(0, 0, n);
  const double nn = double(n) * double(n);
  return kernelSum(a, a, sigmas) / nn + kernelSum(b, b, sigmas) / nn -
         2.0 * kernelSum(a, b, sigmas) / nn;
}

double mmdRbfUnbiased(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& sigmas) {
  checkSigmas(sigmas, "mmdRbfUnbiased");
  auto [a, b] = asPair(x, y, "mmdRbfUnbiased", 2);
  const double n = double(a.size(0)), m = double(b.size(0));
  // Self-pairs have distance exactly 0 (cdist without mm), so each adds k(0) = #sigmas.
  const double self = double(sigmas.size());
  return (kernelSum(a, a, sigmas) - n * self) / (n * (n - 1.0)) +
         (kernelSum(b, b, sigmas) - m * self) / (m * (m - 1.0)) -
         2.0 * kernelSum(a, b, sigmas) / (n * m);
}

double frechetDistance(const at::Tensor& x, const at::Tensor& y) {
  auto [a, b] = asPair(x, y, "frechetDistance", 2);
  auto [muA, covA] = moments(a);
  auto [muB, covB] = moments(b);
  auto [evalA, evecA] = at::linalg_eigh(covA);
  at::Tensor sqrtA = (evecA * evalA.clamp_min(0.0).sqrt()).matmul(evecA.t());  // [d, d]
  at::Tensor inner = sqrtA.matmul(covB).matmul(sqrtA);                         // [d, d]
  at::Tensor traceSqrt = at::linalg_eigvalsh((inner + inner.t()) * 0.5).clamp_min(0.0).sqrt().sum();
  at::Tensor fd = (muA - muB).square().sum() + covA.trace() + covB.trace() - 2.0 * traceSqrt;
  return fd.item<double>();
}

double meanPairwiseDistance(const at::Tensor& x, const at::Tensor& y, DistanceComputation how) {
  auto [a, b] = asPair(x, y, "meanPairwiseDistance");
  return pairSum(a, b, [](const at::Tensor& d) { return d; }, how) / (double(a.size(0)) * double(b.size(0)));
}

double energyDistance(const at::Tensor& x, const at::Tensor& y, EnergyEstimator estimator) {
  auto [a, b] = asPair(x, y, "energyDistance",
                       estimator == EnergyEstimator::UStatistic ? 2 : 1);
  const double n = double(a.size(0)), m = double(b.size(0));
  auto identity = [](const at::Tensor& d) { return d; };
  // Self-pair distances are 0, so the U-statistic only changes the divisor.
  const bool u = estimator == EnergyEstimator::UStatistic;
  const double xx = pairSum(a, a, identity) / (u ? n * (n - 1.0) : n * n);
  const double yy = pairSum(b, b, identity) / (u ? m * (m - 1.0) : m * m);
  return 2.0 * pairSum(a, b, identity) / (n * m) - xx - yy;
}

}  // namespace latentcell::eval
