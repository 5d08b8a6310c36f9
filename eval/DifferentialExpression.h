// Differential expression of each perturbation group against the control group, as cell-eval
// 0.8.2 computes it through pdex 0.3.0 (pdex(mode="ref", is_log1p=True, epsilon=0.0,
// geometric_mean=True)); cell-eval's DE metrics (overlap_at_k, de_spearman_*, pr_auc, ...) are
// built on these tables, so they must agree with pdex to the last digits.
//
// Per (target group, gene):
//   - Mann-Whitney U, two-sided, asymptotic normal approximation with tie correction and
//     continuity correction 0.5 (= scipy.stats.mannwhitneyu(method="asymptotic")); statistic is
//     U of the target group; p = 1 where the variance is 0 (the gene is constant across both
//     groups); p clipped to [0, 1].
//   - fdr: Benjamini-Hochberg over the genes of that target (scipy false_discovery_control).
//   - target_mean, ref_mean: pseudobulks in count space, expm1(mean(x)) for log1p input
//     (expm1(mean(log1p(x))) otherwise), computed in float64.
//   - log2_fold_change = log2((t + eps) / (r + eps)), percent_change = (t - r) / (r + eps), with
//     0/0 (NaN) defined as 0; x/0 stays +-inf, as in pdex.
// Values are rounded to float32 before ranking, as pdex ranks cell-eval's float32 matrices; NaN
// values are rejected (pdex raises on them too).
#pragma once

#include "data/AnnData.h"

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string_view>

namespace latentcell::eval {

// pdex 0.3.0's output columns, in order; one row per (target, feature), targets in the order of
// their sorted labels (pdex's categorical order), features in matrix order.
inline constexpr std::array<std::string_view, 11> kPdexColumns = {
    "target",           "feature",        "target_mean", "ref_mean",
    "target_membership", "ref_membership", "log2_fold_change", "percent_change",
    "p_value",          "statistic",      "fdr"};

struct MannWhitneyResult {
  at::Tensor statistic;  // [genes] float64, U of the target group
  at::Tensor pValue;     // [genes] float64, two-sided, in [0, 1]
};

// A reference (control) group prepared once: its values sorted per gene, so that each target
// group costs O(nnz_target * log nnz_reference). Zeros are never sorted: per gene they form one
// tie block whose rank and tie term are known in closed form, so only nonzero entries are keyed.
class MannWhitneyReference {
 public:
  // reference: [cells, genes], any real dtype, any device; cells >= 1.
  explicit MannWhitneyReference(const at::Tensor& reference);
  // target: [cells, genes] on the reference's device, cells >= 1.
  MannWhitneyResult test(const at::Tensor& target) const;

  int64_t cells() const { return cells_; }
  int64_t genes() const { return genes_; }

 private:
  int64_t cells_ = 0;
  int64_t genes_ = 0;
  at::Tensor keys_;       // [nnz] int64 sorted (gene, value) keys of the nonzero entries
  at::Tensor geneStart_;  // [genes] int64 first position of each gene in keys_
  at::Tensor zeros_;      // [genes] int64 zero entries per gene
  at::Tensor negatives_;  // [genes] int64 negative entries per gene
  at::Tensor ties_;       // [genes] int64 sum over tie blocks of t^3 - t
};

// Benjamini-Hochberg adjusted p-values along the last dimension, bit-compatible with
// scipy.stats.false_discovery_control(p, method="bh"): p_(i) * (m / i), running minimum from
// the largest p down, clipped to [0, 1]; returned unchanged when m <= 1. Any device, float64.
at::Tensor benjaminiHochberg(const at::Tensor& p);

struct DeOptions {
  bool isLog1p = true;   // pdex is_log1p: cell-eval passes true unless allow_discrete
  double epsilon = 0.0;  // pdex epsilon: cell-eval pins 0
  int threads = 0;       // CPU threads over targets (eval/Parallel.h); <= 1: one at a time
};

// All outputs live on x's device; [targets, genes] tables are float64.
struct DeResult {
  at::Tensor targets;           // [targets] int64 group ids, ascending, control excluded
  at::Tensor targetMean;        // [targets, genes]
  at::Tensor referenceMean;     // [genes] (pdex repeats it on every target's rows)
  at::Tensor targetMembership;  // [targets] int64 cells per target
  int64_t referenceMembership = 0;
  at::Tensor log2FoldChange;  // [targets, genes]
  at::Tensor percentChange;   // [targets, genes]
  at::Tensor pValue;          // [targets, genes]
  at::Tensor statistic;       // [targets, genes]
  at::Tensor fdr;             // [targets, genes]
};

// x: [cells, genes] (log1p-normalised when options.isLog1p); groups: [cells] integer group ids
// (negative = cell left out, like pdex's unlabelled cells); control: the reference group's id.
// Targets come out in ascending id order: give ids in sorted label order to reproduce pdex's rows.
DeResult differentialExpression(const at::Tensor& x, const at::Tensor& groups, int64_t control,
                                const DeOptions& options = {});

// The same tables from CSR rows on the CPU, never densified: x's nonzero entries are gathered per
// gene with their group and sorted once, and one sweep over a gene's sorted values gives every
// target's U and tie term against the control at once (the control's entries below a value are a
// running count; all zeros form one tie block per gene, handled in closed form). O(nnz log nnz_gene
// + targets * genes), spread over `options.threads` threads by gene. groups: one id per row (negative
// = left out). Results equal differentialExpression's (same integers, same float64 formulas).
DeResult differentialExpressionSparse(const data::CsrMatrix& x, const std::vector<int64_t>& groups,
                                      int64_t control, const DeOptions& options = {});

}  // namespace latentcell::eval
