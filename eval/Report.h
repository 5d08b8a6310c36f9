// `latentcell report`: one self-contained HTML page (inline CSS and SVG figures, nothing fetched,
// no scripts) and a Markdown summary of what the run directories hold:
//   - training curves: each metrics.jsonl (the trainer's log) as loss against step per split;
//   - one metrics table, evaluation directories side by side: the "mean" row of cell-eval's
//     agg_results.csv, the mean over perturbations of distribution.csv (NaN skipped, as its own
//     "(mean)" row), and the "all" numbers of a reconstruction evaluation's summary.json;
//   - for each directory holding pred.h5ad and real.h5ad (what `generate --out pred.h5ad --real-out
//     real.h5ad` writes): per perturbation, the predicted against the real expression change from
//     control (one point per gene) with its Pearson r, and a PCA of real and generated cells.
//
// Expression values follow the evaluator (eval/DistributionSuite.h, step 2): counts are
// normalize_total(1e4) + log1p'd, log1p input is used as it is; the PCA is eval::fitPcaCovariance
// on all real cells read in row blocks, so no [cells, genes] matrix is densified whole. The page is
// also well-formed XML (XHTML syntax), so tests read it back with an XML parser.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace latentcell::eval {

struct ReportOptions {
  std::string pertCol = "perturbation";
  std::string controlPert = "non-targeting";
  int64_t maxPerturbations = 12;  // delta panels per prediction directory
  int64_t maxPcaCells = 2000;     // cells per side in the PCA figure (a seeded subsample)
  uint64_t seed = 0;              // of that subsample
  double targetSum = 1e4;         // normalize_total of count inputs
  int maxDepth = 3;               // directory levels searched below each run directory
};

// One thing found under a run directory, labelled "<run directory name>/<path inside it>".
struct ReportItem {
  std::string label;
  std::filesystem::path dir;
};

struct ReportInputs {
  std::vector<std::string> runDirs;
  std::vector<ReportItem> trainingLogs;  // directories with metrics.jsonl
  std::vector<ReportItem> evaluations;   // with agg_results.csv, distribution.csv or a reconstruction summary.json
  std::vector<ReportItem> predictions;   // with pred.h5ad and real.h5ad
};

// Walks each run directory (itself and up to maxDepth levels below, checkpoints/ and tensorboard/
// skipped, symlinks not followed). invalid_argument naming the directory when it does not exist or
// holds nothing to report.
ReportInputs findReportInputs(const std::vector<std::string>& runDirs, int maxDepth);

// The perturbation column and control label the evaluations found in `inputs` were run with
// (`inputs.pert_col` / `inputs.control_pert` of their summary.json), when they all agree: the
// defaults of the delta panels for a user who named them once, to `latentcell evaluate` or a recipe.
// False, with `options` unchanged, when no evaluation records them or two disagree.
bool adoptEvaluationLabels(const ReportInputs& inputs, ReportOptions& options);

struct ReportFiles {
  std::string html, markdown;
  int64_t lossFigures = 0, deltaFigures = 0, pcaFigures = 0;
  int64_t tableColumns = 0, tableRows = 0;
};

// Reads every input (errors name the file) and writes `htmlPath` and the Markdown summary next to
// it (the same name with the extension .md).
ReportFiles writeReport(const ReportInputs& inputs, const ReportOptions& options, const std::string& htmlPath);

}  // namespace latentcell::eval
