// The standard non-learned baselines of perturbation prediction, built as a predicted h5ad that
// `latentcell evaluate` and `cell-eval run` score like any model's output (notes sec. 6: "Baselines
// every comparison should include").
//
// Everything is computed in cell-eval's log space: each file is passed through cell-eval's own
// _convert_to_normlog (integer-looking counts are normalize_total'd to that file's median library
// size and log1p'd; log1p input is used as is), because that is the space cell-eval builds its
// `cell-eval baseline` in and the space its metrics are computed in. Means are arithmetic means of
// log1p values, taken in float64 and stored as float32. The output is LIKE cell for cell: LIKE's
// obs (names and every column, in order) and var, its control cells copied (converted the same
// way, so that they equal what cell-eval makes of LIKE's controls), and every other cell replaced
// by the baseline's prediction for its (context, perturbation). So each (condition, number of
// cells) of LIKE is reproduced exactly.
//
// The kinds (c = a cell's context, the --celltype-col value, or one context without it; p = its
// perturbation; "training" = TRAIN's cells; all means are over cells):
//   cell-mean     mean of all training cells whose perturbation is not the control, whatever their
//                 context (STATE's and the Virtual Cell Challenge's "cell mean"). Note: `cell-eval
//                 baseline` instead averages the per-perturbation means with the control's included.
//   context-mean  scLDM App. H eq. 25-26: mean of the training cells of context c whose perturbation
//                 is not the control. A context without such cells is an error.
//   perturb-mean  scLDM App. H eq. 21-24: ctrl_c + delta_p, where ctrl_c is the mean of the training
//                 control cells of context c and delta_p the mean over the contexts c' in which p
//                 has training cells (and c' has training controls) of mean(p, c') - ctrl_c'. Where
//                 training has no control cells of c, ctrl_c is the mean of LIKE's control cells of
//                 c (the cells the output copies anyway). A perturbation without training cells gets
//                 the mean of delta_q over all training perturbations q (the average effect); the
//                 report lists those perturbations.
#pragma once

#include "data/AnnData.h"

#include <string>
#include <vector>

namespace latentcell::eval {

enum class BaselineKind { CellMean, PerturbMean, ContextMean };
BaselineKind parseBaselineKind(const std::string& name);  // "cell-mean", "perturb-mean", "context-mean"
const char* baselineKindName(BaselineKind kind);

struct BaselineOptions {
  BaselineKind kind = BaselineKind::CellMean;
  std::string pertCol = "target";
  std::string controlPert = "non-targeting";
  std::string celltypeCol;  // empty: one context
};

struct BaselineReport {
  bool trainNormalised = false, likeNormalised = false;  // counts were normalize_total + log1p'd
  int64_t predictedCells = 0, controlCells = 0;            // LIKE cells replaced / copied
  std::vector<std::string> unseenPerturbations;           // perturb-mean: given the average effect
  std::vector<std::string> controlsFromLike;              // perturb-mean: contexts whose ctrl_c is LIKE's
};

// TRAIN's genes are matched to LIKE's var_names by name (each of LIKE's genes must be in TRAIN);
// the output has LIKE's genes in LIKE's order. Errors (std::invalid_argument, one line) name the
// file, the column or label and the fix.
data::AnnData makeBaseline(const data::AnnData& train, const data::AnnData& like, const BaselineOptions& options,
                           BaselineReport* report = nullptr);

}  // namespace latentcell::eval
