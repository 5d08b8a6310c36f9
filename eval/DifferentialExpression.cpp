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

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <numeric>
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

// pdex's fold changes from the means, and BH over each target's p-values.
void addFoldChangesAndFdr(DeResult& result, const DeOptions& options) {
  const at::Tensor& t = result.targetMean;                 // [targets, genes]
  const at::Tensor r = result.referenceMean.unsqueeze(0);  // [1, genes]
  result.log2FoldChange = nanToZero(at::log2((t + options.epsilon) / (r + options.epsilon)));
  result.percentChange = nanToZero((t - r) / (r + options.epsilon));
  result.fdr = benjaminiHochberg(result.pValue);
}

// U and p from the exact integers 2U (target group) and sum(t^3 - t) over the pooled tie blocks:
// numba_mwu's _mwu_stats_from_rank_sum, operation for operation. twiceU, ties: any shape, int64.
MannWhitneyResult mannWhitneyFromCounts(const at::Tensor& twiceU, const at::Tensor& ties, int64_t n1, int64_t n2) {
  const double n1d = double(n1), n2d = double(n2), n = n1d + n2d;
  at::Tensor u1 = twiceU.to(at::kDouble) * 0.5;    // U of the target group
  at::Tensor u = at::maximum(u1, n1d * n2d - u1);  // two-sided: the larger U
  at::Tensor sSq = (n1d * n2d / 12.0) * ((n + 1.0) - ties.to(at::kDouble) / (n * (n - 1.0)));
  at::Tensor z = ((u - n1d * n2d / 2.0) - 0.5) / sSq.sqrt();
  at::Tensor p = at::where(sSq > 0.0, at::erfc(z / std::sqrt(2.0)).clamp(0.0, 1.0), 1.0);
  return {u1, p};
}

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

  return mannWhitneyFromCounts(twiceU, ties, n1, n2);
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
  result.statistic = table(statistic);
  result.pValue = table(pValue);
  addFoldChangesAndFdr(result, options);
  return result;
}

namespace {

// Sorts keys by their high 32 bits (the value code; the group in the low bits may end in any order):
// LSD radix sort, 8 bits a pass, skipping the passes where every key has the same digit (log1p values
// share their top exponent bits). scratch is resized as needed.
void sortByValue(uint64_t* begin, uint64_t* end, std::vector<uint64_t>& scratch) {
  const size_t n = size_t(end - begin);
  if (n < 64) {
    std::sort(begin, end, [](uint64_t a, uint64_t b) { return (a >> 32) < (b >> 32); });
    return;
  }
  scratch.resize(n);
  uint64_t *from = begin, *to = scratch.data();
  for (int shift = 32; shift < 64; shift += 8) {
    size_t count[257] = {};
    for (size_t i = 0; i < n; ++i) ++count[((from[i] >> shift) & 0xFF) + 1];
    if (count[((from[0] >> shift) & 0xFF) + 1] == n) continue;  // one digit: the pass would not move a key
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (size_t i = 0; i < n; ++i) to[count[(from[i] >> shift) & 0xFF]++] = from[i];
    std::swap(from, to);
  }
  if (from != begin) std::copy(from, from + n, begin);
}

}  // namespace

// The sparse engine. Per gene, the nonzero entries become uint64 keys (order-preserving float32
// code << 32 | group), sorted; a sweep over the blocks of equal value then adds, for every target
// with a entries in a block holding c control entries and cb control entries below it,
// a (2 cb + c) to 2U and (a + c)^3 - (a + c) - (c^3 - c) to its tie term on top of the control's own
// tie total. The zero block (between negatives and positives) holds every group's zeros.
DeResult differentialExpressionSparse(const data::CsrMatrix& x, const std::vector<int64_t>& groups, int64_t control,
                                      const DeOptions& options) {
  if (int64_t(groups.size()) != x.rows)
    throw std::invalid_argument("differentialExpressionSparse: groups must have one id per cell (" +
                                std::to_string(x.rows) + "), got " + std::to_string(groups.size()));
  if (options.epsilon < 0.0)
    throw std::invalid_argument("differentialExpressionSparse: epsilon must be non-negative");
  if (x.cols >= INT32_MAX) throw std::invalid_argument("differentialExpressionSparse: more than 2^31 genes");
  for (float v : x.data)
    if (std::isnan(v)) throw std::invalid_argument("differentialExpressionSparse: expression values contain NaN");

  // Groups: ids >= 0 in ascending order; k indexes them.
  std::vector<int64_t> ids;
  for (int64_t g : groups)
    if (g >= 0) ids.push_back(g);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const auto controlIt = std::lower_bound(ids.begin(), ids.end(), control);
  if (control < 0 || controlIt == ids.end() || *controlIt != control)
    throw std::invalid_argument("differentialExpressionSparse: control group " + std::to_string(control) +
                                " has no cells");
  const int64_t nGroups = int64_t(ids.size()), kc = controlIt - ids.begin(), genes = x.cols;
  std::vector<int32_t> groupOf(size_t(x.rows), -1);  // row -> k
  std::vector<int64_t> groupSize(size_t(nGroups), 0);
  for (int64_t r = 0; r < x.rows; ++r) {
    if (groups[size_t(r)] < 0) continue;
    groupOf[size_t(r)] = int32_t(std::lower_bound(ids.begin(), ids.end(), groups[size_t(r)]) - ids.begin());
    ++groupSize[size_t(groupOf[size_t(r)])];
  }
  const int64_t n2 = groupSize[size_t(kc)];
  for (int64_t k = 0; k < nGroups; ++k)
    if (k != kc && groupSize[size_t(k)] + n2 > kMaxPooledCells)
      throw std::invalid_argument("differentialExpressionSparse: " + std::to_string(groupSize[size_t(k)] + n2) +
                                  " pooled cells exceed the exact-arithmetic limit of " +
                                  std::to_string(kMaxPooledCells) + "; subsample the groups");

  // Per (group, gene): the sums of the pseudobulk (log1p) values, 2U and the tie term beyond the
  // control's own. Genes are cut into a few contiguous chunks (one work item each); a chunk gathers the
  // keys of kGenesPerBlock genes at a time from the rows, each row's cursor moving on from where the
  // previous block stopped (indices ascend within a row), so only a block's keys exist at a time and
  // a row is searched once per chunk, not once per block.
  at::Tensor sums = at::zeros({nGroups, genes}, at::kDouble);
  at::Tensor twiceU = at::zeros({nGroups, genes}, at::kLong), ties = at::zeros({nGroups, genes}, at::kLong);
  double* sump = sums.data_ptr<double>();
  int64_t* twiceUp = twiceU.data_ptr<int64_t>();
  int64_t* tiesp = ties.data_ptr<int64_t>();
  constexpr int64_t kGenesPerBlock = 64;
  constexpr uint64_t kZeroCode = 0x80000000u;
  auto cube = [](int64_t t) { return t * t * t - t; };
  const int64_t blocks = (genes + kGenesPerBlock - 1) / kGenesPerBlock;
  const int64_t chunks = std::clamp<int64_t>(4 * int64_t(std::max(options.threads, 1)), 1, std::max<int64_t>(blocks, 1));
  const int32_t* idx = x.indices.data();
  const float* values = x.data.data();
  // Keys per gene, from one sequential pass, so each block reads its rows' entries only once.
  std::vector<int64_t> geneKeys(size_t(genes), 0);
  for (int64_t r = 0; r < x.rows; ++r)
    if (groupOf[size_t(r)] >= 0)
      for (int64_t i = x.indptr[r]; i < x.indptr[r + 1]; ++i) geneKeys[size_t(idx[i])] += values[i] != 0.0f;
  auto sweepChunk = [&](int64_t chunk) {
    const int64_t b0 = chunk * blocks / chunks, b1 = (chunk + 1) * blocks / chunks;
    std::vector<int64_t> cursor(size_t(x.rows));
    for (int64_t r = 0; r < x.rows; ++r)
      cursor[size_t(r)] = std::lower_bound(idx + x.indptr[r], idx + x.indptr[r + 1], int32_t(b0 * kGenesPerBlock)) - idx;
    std::vector<int64_t> geneStart(static_cast<size_t>(kGenesPerBlock) + 1), fill(static_cast<size_t>(kGenesPerBlock));
    std::vector<uint64_t> keys, scratch;
    std::vector<int64_t> nonzero(static_cast<size_t>(nGroups)), inBlock(static_cast<size_t>(nGroups), 0);
    std::vector<int32_t> touched;
    for (int64_t geneBlock = b0; geneBlock < b1; ++geneBlock) {
      const int64_t g0 = geneBlock * kGenesPerBlock, g1 = std::min(genes, g0 + kGenesPerBlock);
      // Gather: each row's entries of genes [g0, g1), bucketed by gene. The rows' entries are far
      // apart, so the ones a few rows ahead are prefetched.
      geneStart[0] = 0;
      for (int64_t g = g0; g < g1; ++g) geneStart[size_t(g - g0) + 1] = geneStart[size_t(g - g0)] + geneKeys[size_t(g)];
      keys.resize(size_t(geneStart[size_t(g1 - g0)]));
      std::copy(geneStart.begin(), geneStart.end() - 1, fill.begin());
      constexpr int64_t kAhead = 8;
      for (int64_t r = 0; r < x.rows; ++r) {
        if (r + kAhead < x.rows) {
          const int64_t ahead = cursor[size_t(r + kAhead)];
          __builtin_prefetch(idx + ahead), __builtin_prefetch(idx + ahead + 16);
          __builtin_prefetch(values + ahead), __builtin_prefetch(values + ahead + 16);
        }
        const int32_t k = groupOf[size_t(r)];
        const int64_t rowEnd = x.indptr[r + 1];
        int64_t i = cursor[size_t(r)];
        if (k < 0) {
          while (i < rowEnd && idx[i] < g1) ++i;
        }
        for (; i < rowEnd && idx[i] < g1; ++i) {
          const float v = values[i];
          if (v == 0.0f) continue;
          const int32_t g = idx[i];
          sump[int64_t(k) * genes + g] += options.isLog1p ? double(v) : std::log1p(double(v));
          int32_t bits;
          std::memcpy(&bits, &v, sizeof bits);
          const uint32_t code = uint32_t(bits ^ ((bits >> 31) & 0x7FFFFFFF)) + 0x80000000u;  // order-preserving
          keys[size_t(fill[size_t(g - g0)]++)] = uint64_t(code) << 32 | uint32_t(k);
        }
        cursor[size_t(r)] = i;
      }
      for (int64_t g = g0; g < g1; ++g) {
        uint64_t* begin = keys.data() + geneStart[size_t(g - g0)];
        uint64_t* end = keys.data() + geneStart[size_t(g - g0) + 1];
        sortByValue(begin, end, scratch);
        std::fill(nonzero.begin(), nonzero.end(), 0);
        for (const uint64_t* k = begin; k != end; ++k) ++nonzero[size_t(uint32_t(*k))];
        const int64_t controlZeros = n2 - nonzero[size_t(kc)];
        int64_t controlBelow = 0, controlTies = cube(controlZeros);
        bool zerosDone = false;
        auto zeroBlock = [&] {  // every group's zeros tie with the control's
          for (int64_t t = 0; t < nGroups; ++t) {
            if (t == kc) continue;
            const int64_t a = groupSize[size_t(t)] - nonzero[size_t(t)];
            twiceUp[t * genes + g] += a * (2 * controlBelow + controlZeros);
            tiesp[t * genes + g] += cube(a + controlZeros) - cube(controlZeros);
          }
          controlBelow += controlZeros;
          zerosDone = true;
        };
        for (const uint64_t* block = begin; block != end;) {
          const uint64_t code = *block >> 32;
          if (!zerosDone && code > kZeroCode) zeroBlock();
          const uint64_t* blockEnd = block;
          int64_t c = 0;
          for (; blockEnd != end && (*blockEnd >> 32) == code; ++blockEnd) {
            const uint32_t k = uint32_t(*blockEnd);
            if (k == uint32_t(kc)) {
              ++c;
            } else if (inBlock[k]++ == 0) {
              touched.push_back(int32_t(k));
            }
          }
          for (int32_t t : touched) {
            const int64_t a = inBlock[size_t(t)];
            twiceUp[t * genes + g] += a * (2 * controlBelow + c);
            tiesp[t * genes + g] += cube(a + c) - cube(c);
            inBlock[size_t(t)] = 0;
          }
          touched.clear();
          controlTies += cube(c);
          controlBelow += c;
          block = blockEnd;
        }
        if (!zerosDone) zeroBlock();
        for (int64_t t = 0; t < nGroups; ++t) tiesp[t * genes + g] += controlTies;
      }
    }
  };
  parallelFor(chunks, options.threads, sweepChunk);

  std::vector<int64_t> targetRows, targets, memberships;
  for (int64_t k = 0; k < nGroups; ++k) {
    if (k == kc) continue;
    targetRows.push_back(k);
    targets.push_back(ids[size_t(k)]);
    memberships.push_back(groupSize[size_t(k)]);
  }
  const at::Tensor rows = at::tensor(targetRows, at::kLong);
  const at::Tensor n1 = at::tensor(memberships, at::kLong).to(at::kDouble).unsqueeze(1);  // [targets, 1]
  DeResult result;
  result.targets = at::tensor(targets, at::kLong);
  result.targetMembership = at::tensor(memberships, at::kLong);
  result.referenceMembership = n2;
  result.referenceMean = at::expm1(sums[kc] / double(n2));                     // [genes]
  result.targetMean = at::expm1(sums.index_select(0, rows) / n1);              // [targets, genes]
  std::vector<at::Tensor> statistic, pValue;
  for (size_t t = 0; t < targetRows.size(); ++t) {
    const MannWhitneyResult test =
        mannWhitneyFromCounts(twiceU[targetRows[t]], ties[targetRows[t]], memberships[t], n2);
    statistic.push_back(test.statistic);
    pValue.push_back(test.pValue);
  }
  auto table = [&](const std::vector<at::Tensor>& r) {
    return r.empty() ? at::empty({0, genes}, at::kDouble) : at::stack(r);
  };
  result.statistic = table(statistic);
  result.pValue = table(pValue);
  addFoldChangesAndFdr(result, options);
  return result;
}

}  // namespace latentcell::eval
