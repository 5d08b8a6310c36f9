// Distribution distances between real and generated cells: PCA fitted on real cells, exact
// Wasserstein-1/2, multi-bandwidth RBF MMD, Fréchet distance and energy distance (notes sec. 6).
//
// These are the numbers papers report (scLDM, CFGen), so each one follows a named reference
// exactly: W1/W2 are POT's ot.emd2 (exact network simplex, uniform weights), the biased MMD is
// CFGen's mix_rbf_mmd2 on the first min(n, m) rows, the energy distance is cell-eval's edistance
// (a V-statistic), PCA uses sklearn's sign convention. Inputs are [cells, features] tensors of any
// floating dtype on any device; every computation runs in float64 on that device (except the
// network simplex, which runs on the CPU), because a single-precision cost or kernel matrix would
// not agree with the references to the 1e-8 the tests ask for. Results are plain doubles.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace latentcell::eval {

// PCA fitted on real cells; generated cells are projected with the same mean and loadings.
struct Pca {
  at::Tensor mean;               // [features] float64, the real cells' mean
  at::Tensor components;         // [k, features] float64, orthonormal rows, largest |entry| > 0
  at::Tensor explainedVariance;  // [k] float64, singular value^2 / (cells - 1)

  // (x - mean) @ components^T in float64 on x's device, a row block at a time: [cells, features] -> [cells, k].
  at::Tensor transform(const at::Tensor& x) const;
  // The same for cells produced a row block at a time (see RowBlocks), on the blocks' device.
  at::Tensor transform(int64_t cells, const std::function<at::Tensor(int64_t, int64_t)>& rows) const;
};

// rows(start, end): the cells [start, end) as a [end - start, features] tensor of any floating dtype,
// e.g. densified from CSR, so that a large sparse matrix is never held dense whole.
using RowBlocks = std::function<at::Tensor(int64_t start, int64_t end)>;

// How fitPca finds the components. Svd: thin SVD of the centred matrix (exact, but O(cells *
// features^2) with a large constant: ~90 s for 50k x 2000 on one core). CovarianceEigh: symmetric
// eigendecomposition of the centred Gram matrix X^T X (one matrix product and a features^2 eigh,
// ~10x faster); it squares the condition number, which costs accuracy only in components whose
// variance is ~1e-8 of the largest, far below the leading ones a protocol keeps. Auto: Svd unless
// cells >= 2 * features and features >= 256, where CovarianceEigh is much faster.
enum class PcaSolver { Auto, Svd, CovarianceEigh };

// Top-k principal components of `real` ([cells, features], cells >= 2, k <= min(cells, features)).
// Signs follow sklearn >= 1.5 (svd_flip with u_based_decision=False): each component's entry of
// largest magnitude is positive, so projections are reproducible across solvers and backends.
// CovarianceEigh reads `real` in float64 row blocks (never a whole float64 copy) and, on the CPU,
// sums the blocks' Gram matrices on `threads` threads (eval/Parallel.h).
Pca fitPca(const at::Tensor& real, int64_t k, PcaSolver solver = PcaSolver::Auto, int threads = 0);
// The CovarianceEigh solver on `cells` rows read through `rows` (each block read twice: mean, then
// Gram matrix), summing the blocks on `threads` threads when they are on the CPU.
Pca fitPcaCovariance(int64_t cells, int64_t features, const RowBlocks& rows, int64_t k, int threads = 0);

// Exact optimal transport cost between uniform empirical measures on the rows and columns of
// `cost` ([n, m], finite): min over couplings with marginals 1/n, 1/m of sum P_ij cost_ij, as
// ot.emd2(unif(n), unif(m), cost). Needs n * m < 2^31 arcs.
double exactTransportCost(const at::Tensor& cost);

// W1 with the Euclidean cost; W2 = sqrt(optimum with the squared Euclidean cost) (CFGen's
// wasserstein(power=1|2)). x: [n, d], y: [m, d].
double wasserstein1(const at::Tensor& x, const at::Tensor& y);
double wasserstein2(const at::Tensor& x, const at::Tensor& y);

// The bandwidths of CFGen's RBF MMD; the kernel is sum over sigma of exp(-|x-y|^2 / (2 sigma^2)).
inline const std::vector<double> kMmdSigmas = {0.01, 0.1, 1.0, 10.0, 100.0};

// Squared MMD, biased (V-statistic) estimate on the first min(n, m) rows of each set, as CFGen
// reports it. Zero for identical sets.
double mmdRbfBiased(const at::Tensor& x, const at::Tensor& y,
                    const std::vector<double>& sigmas = kMmdSigmas);
// Squared MMD, unbiased estimate on all rows (scLDM App. J): within-set sums exclude the diagonal
// and divide by n(n-1) and m(m-1); the cross term is the mean over all n*m pairs. n, m >= 2; can be
// slightly negative.
double mmdRbfUnbiased(const at::Tensor& x, const at::Tensor& y,
                      const std::vector<double>& sigmas = kMmdSigmas);

// |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)) with covariances at ddof = 1 (numpy.cov).
// The trace of the square root is taken from the eigenvalues of sqrt(S_x) S_y sqrt(S_x), which is
// symmetric PSD and has the same spectrum as S_x S_y, so no non-symmetric sqrtm is needed. n, m >= 2.
double frechetDistance(const at::Tensor& x, const at::Tensor& y);

// How pairwise Euclidean distances are formed. Exact: from coordinate differences (cdist without the
// matrix product), accurate for nearby points but scalar O(n m d) work. MatrixProduct: sqrt(|x|^2 +
// |y|^2 - 2 x.y) through BLAS, many times faster in thousands of dimensions, with an absolute error
// of about sqrt(eps) |x| between nearby points; it is what sklearn's pairwise_distances, and so
// cell-eval's edistance, computes.
enum class DistanceComputation { Exact, MatrixProduct };

// Mean Euclidean distance over all pairs (x_i, y_j) in float64, x: [n, d], y: [m, d], accumulated
// over row blocks of the distance matrix.
double meanPairwiseDistance(const at::Tensor& x, const at::Tensor& y,
                            DistanceComputation how = DistanceComputation::Exact);

// 2 E|X - Y| - E|X - X'| - E|Y - Y'| with Euclidean distances.
// VStatistic: every mean runs over all pairs, self-pairs included (cell-eval's edistance, and
// scipy/dcor's default). UStatistic: the within-set means exclude self-pairs (n(n-1) pairs).
enum class EnergyEstimator { VStatistic, UStatistic };
double energyDistance(const at::Tensor& x, const at::Tensor& y,
                      EnergyEstimator estimator = EnergyEstimator::VStatistic);

}  // namespace latentcell::eval
