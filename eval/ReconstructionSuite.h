// Reconstruction metrics from paired files: a stage-1 model's reconstruction of each real cell
// against that cell (`latentcell evaluate --profile reconstruction`, reconstruction.csv).
//
// Metrics, per condition (a --pert-col value, within a --celltype-col value when given) and over all
// cells:
//   nb_error        scLDM's RE (notes sec. 3 and 6; czi-ai/scldm models.py: recon_loss.sum(1).mean()):
//                   the NB negative log-likelihood of the real counts under the reconstruction's mean
//                   mu and the inverse dispersion theta, summed over genes, averaged over cells, with
//                   scVI's log_nb_positive (eps = 1e-8); theta = inf is the Poisson limit.
//   pcc             scLDM's PCC (torchmetrics pearson_corrcoef on [cells, genes], then nanmean): per gene,
//                   Pearson across the cells, averaged over the genes where it is defined.
//   mse             mean over cells and genes of the squared difference (scLDM; benchmark eq. 18).
//   r2_sum          reconstruction benchmark App. A.3.1 eq. 19: R^2 of the condition's summed expression
//                   vector, 1 - |s - s^|^2 / |s - mean(s)|^2.
//   deg_recall_at_100, logfc_spearman   benchmark App. A.3.2 eq. 22-25, for conditions other than the
//                   control: differential expression of the condition against the control cells (of the
//                   same cell type) in real and in reconstructed data, with the Wilcoxon rank-sum (Mann-
//                   Whitney U) engine of eval/DifferentialExpression (cell-eval's: tie and continuity
//                   corrections, Benjamini-Hochberg). DEG recall@K = |S_K(real) n S_K(recon)| / K with S_K
//                   the K = min(100, genes) genes of smallest adjusted p; ties in adjusted p go to the
//                   larger |U - n_t n_r / 2| (the larger |z|, which does not underflow), then the lower gene
//                   index. logfc_spearman: Spearman (average ranks) of the two log2 fold changes
//                   log2(expm1(mean_t) / expm1(mean_r)) over the genes where both are finite.
// The "(all)" row holds nb_error, pcc, mse and r2_sum over all cells and the mean over conditions of
// the two DE metrics.
//
// Space: PCC, MSE, R2 and DE use log1p(x / l * 1e4) with l the *real* cell's library size for both
// files, as scLDM's VAE evaluation scales reconstructed and real counts (models.py, shared_step), so
// that a reconstruction's depth errors count; a cell with l = 0 is all zeros.
//
// The predicted file's contract (what the stage-1 `reconstruct` command writes):
//   - the same cells as REAL in the same order (obs_names equal, checked) and the same var_names;
//   - X: the reconstruction in count space, i.e. the decoder's NB mean mu at the cell's library size
//     (or counts sampled from the model), unless uns['reconstruction_space'] = "log1p", in which case X
//     holds log1p(normalize_total(1e4)) values, used as they are (negative ones included: PCA's affine
//     decoder gives them), and nb_error is not computed; counts must be finite and >= 0, log1p values finite;
//   - var['nb_theta'] (float, > 0, inf allowed): the decoder's gene-wise NB inverse dispersion theta_g
//     (variance mu + mu^2 / theta). When absent, theta_g is fitted by moments given mu:
//     theta_g = sum_i mu_ig^2 / sum_i ((x_ig - mu_ig)^2 - mu_ig), the Poisson limit (inf) where that
//     denominator is <= 0; the report says which source was used.
#pragma once

#include "data/AnnData.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::eval {

enum class ReconstructionSpace { Auto, Counts, Log1p };  // Auto: uns['reconstruction_space'], else counts

struct ReconstructionOptions {
  std::string pertCol = "target";
  std::string controlPert = "non-targeting";  // DE metrics need it; without control cells they are NaN
  std::string celltypeCol;
  ReconstructionSpace predSpace = ReconstructionSpace::Auto;
  double targetSum = 1e4;
  int64_t topK = 100;
  c10::Device device = c10::Device(c10::kCPU);
  int threads = 0;  // CPU threads over DE targets (eval/Parallel.h); <= 1: one at a time
};

struct ReconstructionRow {
  std::string celltype, condition;
  int64_t cells = 0;
  double nbError = 0, pcc = 0, mse = 0, r2Sum = 0, degRecall = 0, logfcSpearman = 0;  // NaN: undefined
};

struct ReconstructionReport {
  std::vector<ReconstructionRow> rows;  // conditions (control included) in (celltype, condition) order
  ReconstructionRow all;                // condition "(all)"
  std::string predSpace;                // "counts" or "log1p"
  std::string thetaSource;              // "var['nb_theta']", "moments" or "none" (log1p predictions)
  int64_t topK = 0;                     // K actually used
  bool hasControl = false;
};

// Checks the pairing and the contract (invalid_argument, one line, naming the file and the fix) and
// computes the metrics.
ReconstructionReport evaluateReconstruction(const data::AnnData& real, const data::AnnData& pred,
                                            const ReconstructionOptions& options);

// reconstruction.csv: [celltype,]perturbation,n_cells,nb_error,pcc,mse,r2_sum,deg_recall_at_100,
// logfc_spearman; one row per condition, then "(all)".
void writeReconstructionCsv(const ReconstructionReport& report, bool withCelltype, const std::string& path);

}  // namespace latentcell::eval
