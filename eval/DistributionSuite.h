// Generation metrics as scLDM and CFGen report them (notes sec. 6; scLDM App. J.3 and J.5; CFGen's
// cfgen/eval/launch_evaluation_metrics_unimodal.py and distribution_distances.py): W1, W2, squared
// RBF MMD and FD between real and predicted cells of each condition, in one PCA space fitted on all
// real cells, and their mean over conditions. This is `latentcell evaluate`'s distribution.csv.
//
// The protocol, step by step (each a documented choice of the references, kept as an option here):
//   1. Genes: the 2000 highly variable genes of the real data (scanpy seurat_v3 on real counts,
//      data::highlyVariableGenesSeuratV3); all genes when there are at most 2000 or when the real X is
//      not counts (seurat_v3 needs counts; log1p input is taken to be gene-selected already).
//   2. Values: counts are normalize_total(target_sum = 1e4) + log1p per file (on all genes, before
//      the gene subset); log1p input (cell-eval's guess_is_lognorm) is used as is and must then be
//      1e4-normalised too. Integer-looking data are counts.
//   3. PCA with 30 components fitted on all real cells (every condition); real and predicted cells
//      are projected with the real mean and loadings.
//   4. Per condition (a --pert-col value, within a --celltype-col value when given; the control label
//      is not a condition): W1 and W2 exact (POT ot.emd2 with uniform weights; eval::wasserstein1/2),
//      MMD^2 with the RBF kernel summed over sigma in {0.01, 0.1, 1, 10, 100}, biased estimate on the
//      first min(n, m) cells of each set (CFGen's mix_rbf_mmd2; the scLDM tables' number) and the
//      unbiased estimate on all cells (scLDM App. J), FD with ddof-1 covariances. Conditions with
//      fewer than 2 cells on a side have no FD and no unbiased MMD (NaN).
//   5. The mean over conditions of each metric, NaN entries skipped.
// Optional subsampling caps the cells per condition and side (a seeded random subset, in file
// order) for conditions too large for exact transport; by default every cell is used.
#pragma once

#include "data/AnnData.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::eval {

struct DistributionOptions {
  std::string pertCol = "target";
  std::string controlPert = "non-targeting";  // not a condition; need not be present
  std::string celltypeCol;                    // empty: conditions are perturbations only
  int64_t topGenes = 2000;
  int64_t components = 30;
  double targetSum = 1e4;
  std::vector<double> sigmas = {0.01, 0.1, 1.0, 10.0, 100.0};
  int64_t maxCells = 0;  // per condition and side; 0 = all
  uint64_t seed = 0;     // for the subsample
  c10::Device device = c10::Device(c10::kCPU);
  int threads = 0;  // CPU threads for the PCA and over conditions (eval/Parallel.h); <= 1: one at a time
};

struct DistributionRow {
  std::string celltype, condition;
  int64_t realCells = 0, predCells = 0;  // cells used
  double w1 = 0, w2 = 0, mmdBiased = 0, mmdUnbiased = 0, fd = 0;
};

struct DistributionReport {
  std::vector<DistributionRow> rows;  // conditions in (celltype, condition) sorted order
  DistributionRow mean;               // condition "(mean)", cells summed
  int64_t genes = 0;                  // genes entering the PCA
  int64_t components = 0;
  bool hvgSelected = false;                             // step 1 selected genes
  bool realNormalised = false, predNormalised = false;  // step 2 normalised counts
};

// Step 2 on one matrix, in place: integer-looking values (counts) are normalize_total(targetSum) +
// log1p'd (returns true); log1p values (cell-eval's guess_is_lognorm) are left as they are (false);
// values fitting neither are an invalid_argument naming `which` ("real", "pred") and `source`.
bool toDistributionLogSpace(data::CsrMatrix& x, double targetSum, const std::string& which, const std::string& source);

// Runs the protocol; invalid_argument (one line) for different var_names, a condition of real without
// predicted cells (or the reverse), or values that are neither counts nor log1p.
// `real` and `pred` are taken by value: their X is normalised in place (pass them with std::move when
// they are not needed afterwards, so that no second copy of a large matrix is made).
DistributionReport evaluateDistribution(data::AnnData real, data::AnnData pred,
                                        const DistributionOptions& options);

// distribution.csv: [celltype,]perturbation,n_real,n_pred,w1,w2,mmd2_rbf,mmd2_rbf_unbiased,fd; one row
// per condition, then the "(mean)" row. Floats as shortest round-trip text, NaN as "NaN".
void writeDistributionCsv(const DistributionReport& report, bool withCelltype, const std::string& path);

}  // namespace latentcell::eval
