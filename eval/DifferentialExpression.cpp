// Differential expression engine (see DifferentialExpression.h).
//
// Mann-Whitney U without ranking the pooled sample: U of the target group is the number of
// (target, reference) pairs with target > reference plus half the ties, i.e. the sum over target
// values of #(reference < v) + #(reference == v) / 2, which searching the target's sorted values in
// the reference values sorted once per gene gives directly (binary searches on CUDA, one linear
// merge on the CPU). The tie term sum(t^3 - t) of the pooled sample splits
// per distinct value into the reference's part (precomputed), the target's part and a cross part
// 3ab(a + b) (a, b: the value's counts in reference and target), each a sum over target entries.
// All counts are int64, so U and the tie term are exact (numba_mwu sums the same integers in
// float64), and only the final normal approximation is floating point.
//
// To search every gene at once, a (gene, value) pair becomes one int64 key: the gene in the high
// 32 bits, the float32 bit pattern mapped to an order-preserving integer in the low 32. Sorting
// and searching 1-D keys is what torch does well on CPU and CUDA alike, and ties are exact
// because equal float32 values have equal keys. Zero entries are never keyed (one closed-form
// tie block per gene), which is where scRNA-seq sparsity pays off.
#include "eval/DifferentialExpression.h"

#include "eval/Parallel.h"

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentcell::eval {

namespace {

constexpr int64_t kGeneStride = int64_t{1} << 32;  // key = gene * kGeneStride + value code
constexpr int64_t kZeroCode = int64_t{1} << 31;    // value code of +0.0; negatives lie below
// n^3 of the pooled tie block must fit in int64.
constexpr int64_t kMaxPooledCells = 2'000'000;

// A [cells, genes] input as contiguous float32 (pdex ranks cell-eval's float32 values).
at::Tensor asValues(const at::Tensor& x, const char* what) {
  if (!x.defined() || x.dim() != 2)
    throw std::invalid_argument(std::string(what) + ": expected a 2-D [cells, genes] tensor");
  if (x.size(0) < 1) throw std::invalid_argument(std::string(what) + ": the group has no cells");
  if (x.size(1) >= INT32_MAX)
    throw std::invalid_argument(std::string(what) + ": more than 2^31 genes");
  at::Tensor v = x.to(at::kFloat).contiguous();
  if (at::isnan(v).any().item<bool>())
    throw std::invalid_argument(std::string(what) + ": expression values contain NaN");
  return v;
}

// Sorted keys of the nonzero entries of a float32 [cells, genes] matrix.
at::Tensor sortedNonzeroKeys(const at::Tensor& values) {
  at::Tensor mask = values.ne(0);                                    // [cells, genes]
  at::Tensor gene = mask.nonzero().select(1, 1);                     // [nnz]
  at::Tensor bits = values.masked_select(mask).view(at::kInt);       // [nnz] float32 bit patterns
  // Negative floats order backwards by bit pattern: flip their magnitude bits.
  at::Tensor code = at::bitwise_xor(
      bits, at::bitwise_and(at::bitwise_right_shift(bits, 31), 0x7FFFFFFF));  // [nnz] int32
  return std::get<0>(at::sort(gene * kGeneStride + code.to(at::kLong) + kZeroCode));
}

at::Tensor geneOf(const at::Tensor& keys) { return at::bitwise_right_shift(keys, 32); }

// Per key: how many keys in `sorted` are equal to it.
at::Tensor equalCount(const at::Tensor& sorted, const at::Tensor& keys) {
  return at::searchsorted(sorted, keys, /*out_int32=*/false, /*right=*/true) -
         at::searchsorted(sorted, keys);
}

// Per gene g: the position of the first key >= (g, code) in `sorted`.
at::Tensor geneBound(const at::Tensor& sorted, int64_t genes, int64_t gene0, int64_t code) {
  at::Tensor g = at::arange(gene0, gene0 + genes, sorted.options());  // [genes]
  return at::searchsorted(sorted, g * kGeneStride + code);
}

at::Tensor cubeMinus(const at::Tensor& t) { return t * t * t - t; }

// Per sorted target key: lo = reference keys below it, a = reference keys equal to it, b = target keys
// equal to it. On the CPU one merge of the two sorted arrays (sequential, O(nnz_t + nnz_r)) replaces
// the binary searches, which miss the cache on every probe; on other devices searchsorted does it.
std::array<at::Tensor, 3> rankCounts(const at::Tensor& reference, const at::Tensor& keys) {
  if (!keys.is_cpu()) {
    at::Tensor lo = at::searchsorted(reference, keys);
    return {lo, at::searchsorted(reference, keys, false, /*right=*/true) - lo, equalCount(keys, keys)};
  }
  const at::Tensor r = reference.contiguous(), k = keys.contiguous();
  const int64_t nr = r.numel(), nt = k.numel();
  at::Tensor lo = at::empty({nt}, k.options()), a = at::empty_like(lo), b = at::empty_like(lo);
  const int64_t* rp = r.const_data_ptr<int64_t>();
  const int64_t* kp = k.const_data_ptr<int64_t>();
  int64_t *lop = lo.data_ptr<int64_t>(), *ap = a.data_ptr<int64_t>(), *bp = b.data_ptr<int64_t>();
  int64_t j = 0;
  for (int64_t i = 0; i < nt;) {
    const int64_t key = kp[i];
    int64_t runEnd = i;
    while (runEnd < nt && kp[runEnd] == key) ++runEnd;
    while (j < nr && rp[j] < key) ++j;
    int64_t equalEnd = j;
    while (equalEnd < nr && rp[equalEnd] == key) ++equalEnd;
    for (int64_t t = i; t < runEnd; ++t) lop[t] = j, ap[t] = equalEnd - j, bp[t] = runEnd - i;
    i = runEnd;
  }
  return {lo, a, b};
}

// Pseudobulk before expm1: mean of log1p values (pdex's geometric mean).
at::Tensor preMean(const at::Tensor& values, bool isLog1p) {
  at::Tensor v = values.to(at::kDouble);  // [cells, genes]
  return (isLog1p ? v : at::log1p(v)).mean(0);
}

at::Tensor nanToZero(const at::Tensor& t) { return at::where(at::isnan(t), 0.0, t); }

}  // namespace

MannWhitneyReference::MannWhitneyReference(const at::Tensor& reference) {
  at::Tensor values = asValues(reference, "MannWhitneyReference");
  cells_ = values.size(0);
  genes_ = values.size(1);
  keys_ = sortedNonzeroKeys(values);
  geneStart_ = geneBound(keys_, genes_, 0, 0);
  negatives_ = geneBound(keys_, genes_, 0, kZeroCode) - geneStart_;
  zeros_ = cells_ - (geneBound(keys_, genes_, 1, 0) - geneStart_);
  // Summing t^2 - 1 over a block's t entries gives its t^3 - t.
  at::Tensor equal = equalCount(keys_, keys_);  // [nnz]
  ties_ = cubeMinus(zeros_).index_add_(0, geneOf(keys_), equal * equal - 1);
}

MannWhitneyResult MannWhitneyReference::test(const at::Tensor& target) const {
  at::Tensor values = asValues(target, "MannWhitneyReference::test");
  if (values.size(1) != genes_)
    throw std::invalid_argument("MannWhitneyReference::test: target has " +
                                std::to_string(values.size(1)) + " genes, reference has " +
                                std::to_string(genes_));
  if (values.device() != keys_.device())
    throw std::invalid_argument("MannWhitneyReference::test: target and reference are on "
                                "different devices");
  const int64_t n1 = values.size(0), n2 = cells_;
  if (n1 + n2 > kMaxPooledCells)
    throw std::invalid_argument("MannWhitneyReference::test: " + std::to_string(n1 + n2) +
                                " pooled cells exceed the exact-arithmetic limit of " +
                                std::to_string(kMaxPooledCells) + "; subsample the groups");

  at::Tensor keys = sortedNonzeroKeys(values);  // [nnz_t]
  at::Tensor gene = geneOf(keys);               // [nnz_t]
  // lo: reference keys below; a: equal in reference; b: equal in target.
  auto [lo, a, b] = rankCounts(keys_, keys);  // [nnz_t] each
  at::Tensor positive = at::bitwise_and(keys, kGeneStride - 1).gt(kZeroCode).to(at::kLong);
  // Reference entries below a nonzero value: the nonzero ones before it, plus all zeros if v > 0.
  at::Tensor below = lo - geneStart_.index_select(0, gene) + positive * zeros_.index_select(0, gene);

  at::Tensor zt = n1 - (geneBound(keys, genes_, 1, 0) - geneBound(keys, genes_, 0, 0));  // [genes]
  // 2U, so that every term is an integer; the target's zeros see the reference's negatives below
  // and its zeros tied.
  at::Tensor twiceU = (zt * (2 * negatives_ + zeros_)).index_add_(0, gene, 2 * below + a);
  at::Tensor ties = (ties_ + cubeMinus(zt) + 3 * zeros_ * zt * (zeros_ + zt))
                        .index_add_(0, gene, b * b - 1 + 3 * a * (a + b));  // [genes]

  // numba_mwu's _mwu_stats_from_rank_sum, operation for operation.
  const double n1d = double(n1), n2d = double(n2), n = n1d + n2d;
  at::Tensor u1 = twiceU.to(at::kDouble) * 0.5;         // [genes]
  at::Tensor u = at::maximum(u1, n1d * n2d - u1);       // two-sided: the larger U
  at::Tensor sSq = (n1d * n2d / 12.0) * ((n + 1.0) - ties.to(at::kDouble) / (n * (n - 1.0)));
  at::Tensor z = ((u - n1d * n2d / 2.0) - 0.5) / sSq.sqrt();
  at::Tensor p = at::where(sSq > 0.0, at::erfc(z / std::sqrt(2.0)).clamp(0.0, 1.0), 1.0);
  return {u1, p};
}

at::Tensor benjaminiHochberg(const at::Tensor& p) {
  at::Tensor q = p.to(at::kDouble);
  if (!((q >= 0.0) & (q <= 1.0)).all().item<bool>())
    throw std::invalid_argument("benjaminiHochberg: p-values must lie in [0, 1] (no NaN)");
  const int64_t m = q.dim() == 0 ? 1 : q.size(-1);
  if (m <= 1) return q.clone();
  auto [sorted, order] = at::sort(q, -1);
  at::Tensor rank = at::arange(1, m + 1, q.options());              // [m]
  at::Tensor scaled = sorted * at::full_like(rank, double(m)).div(rank);  // p_(i) * (m / i)
  at::Tensor adjusted = std::get<0>(at::cummin(scaled.flip(-1), -1)).flip(-1);
  return at::empty_like(q).scatter_(-1, order, adjusted).clamp(0.0, 1.0);
}

DeResult differentialExpression(const at::Tensor& x, const at::Tensor& groups, int64_t control,
                                const DeOptions& options) {
  at::Tensor values = asValues(x, "differentialExpression");  // [cells, genes]
  if (!groups.defined() || groups.dim() != 1 || groups.size(0) != values.size(0))
    throw std::invalid_argument("differentialExpression: groups must be 1-D with one id per cell (" +
                                std::to_string(values.size(0)) + ")");
  if (at::isFloatingType(groups.scalar_type()) || at::isComplexType(groups.scalar_type()))
    throw std::invalid_argument("differentialExpression: groups must be an integer tensor of ids");
  if (options.epsilon < 0.0)
    throw std::invalid_argument("differentialExpression: epsilon must be non-negative");

  at::Tensor ids = groups.to(values.device(), at::kLong);
  auto [sortedIds, order] = at::sort(ids, /*stable=*/std::optional<bool>(true), 0, false);
  auto [unique, inverse, counts] = at::unique_consecutive(sortedIds, false, /*return_counts=*/true);
  const at::Tensor uniqueCpu = unique.cpu(), countsCpu = counts.cpu();
  const int64_t* uniqueIds = uniqueCpu.const_data_ptr<int64_t>();
  const int64_t* groupSizes = countsCpu.const_data_ptr<int64_t>();

  std::vector<int64_t> offsets(uniqueCpu.numel() + 1, 0);
  int64_t controlIndex = -1;
  for (int64_t k = 0; k < uniqueCpu.numel(); ++k) {
    offsets[k + 1] = offsets[k] + groupSizes[k];
    if (uniqueIds[k] == control) controlIndex = k;
  }
  if (control < 0 || controlIndex < 0)
    throw std::invalid_argument("differentialExpression: control group " +
                                std::to_string(control) + " has no cells");
  auto rowsOf = [&](int64_t k) {
    return values.index_select(0, order.slice(0, offsets[k], offsets[k + 1]));  // [n_k, genes]
  };

  const at::Tensor controlValues = rowsOf(controlIndex);
  const MannWhitneyReference reference(controlValues);
  std::vector<int64_t> groupIndex, targets, memberships;
  for (int64_t k = 0; k < uniqueCpu.numel(); ++k) {
    if (uniqueIds[k] < 0 || k == controlIndex) continue;
    groupIndex.push_back(k);
    targets.push_back(uniqueIds[k]);
    memberships.push_back(groupSizes[k]);
  }
  const int64_t nTargets = int64_t(groupIndex.size());
  std::vector<at::Tensor> pre(nTargets), statistic(nTargets), pValue(nTargets);
  auto testTarget = [&](int64_t t) {
    const at::Tensor groupValues = rowsOf(groupIndex[t]);
    MannWhitneyResult test = reference.test(groupValues);
    pre[t] = preMean(groupValues, options.isLog1p);
    statistic[t] = test.statistic;
    pValue[t] = test.pValue;
  };
  // On the CPU the targets are spread over the threads, each test running serially (eval/Parallel.h).
  if (values.is_cpu()) {
    parallelFor(nTargets, options.threads, testTarget);
  } else {
    for (int64_t t = 0; t < nTargets; ++t) testTarget(t);
  }

  const auto longs = at::TensorOptions().dtype(at::kLong);
  const auto doubles = values.options().dtype(at::kDouble);
  auto table = [&](const std::vector<at::Tensor>& rows) {
    return rows.empty() ? at::empty({0, values.size(1)}, doubles) : at::stack(rows);
  };
  DeResult result;
  result.targets = at::tensor(targets, longs).to(values.device());
  result.targetMembership = at::tensor(memberships, longs).to(values.device());
  result.referenceMembership = controlValues.size(0);
  result.referenceMean = at::expm1(preMean(controlValues, options.isLog1p));  // [genes]
  result.targetMean = at::expm1(table(pre));                                  // [targets, genes]
  const at::Tensor& t = result.targetMean;
  const at::Tensor r = result.referenceMean.unsqueeze(0);                     // [1, genes]
  result.log2FoldChange = nanToZero(at::log2((t + options.epsilon) / (r + options.epsilon)));
  result.percentChange = nanToZero((t - r) / (r + options.epsilon));
  result.statistic = table(statistic);
  result.pValue = table(pValue);
  result.fdr = benjaminiHochberg(result.pValue);
  return result;
}

}  // namespace latentcell::eval
