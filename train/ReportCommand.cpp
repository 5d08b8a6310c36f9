// `latentcell report RUN_DIR... [--out report.html]`: an HTML page (self-contained: inline CSS and
// SVG, no scripts, nothing fetched) and a Markdown summary next to it of what the run directories
// hold: training curves, evaluation metrics side by side, predicted against real expression changes
// per perturbation and a PCA of real and generated cells (eval/Report.h says what is read where).
#include "eval/Report.h"
#include "train/Commands.h"

#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>

namespace latentcell::cli {
namespace {

struct ReportArgs {
  std::vector<std::string> runDirs;
  std::string out = "report.html";
  eval::ReportOptions options;
  bool labelsGiven = false;  // --pert-col or --control-pert on the command line
};

int runReport(const ReportArgs& a) {
  if (a.options.maxPerturbations < 1) throw std::invalid_argument("--max-perturbations must be at least 1");
  if (a.options.maxPcaCells < 1) throw std::invalid_argument("--max-pca-cells must be at least 1");
  const eval::ReportInputs inputs = eval::findReportInputs(a.runDirs, a.options.maxDepth);
  eval::ReportOptions options = a.options;
  if (!a.labelsGiven) eval::adoptEvaluationLabels(inputs, options);
  const std::filesystem::path parent = std::filesystem::path(a.out).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  const eval::ReportFiles files = eval::writeReport(inputs, options, a.out);
  std::cout << files.lossFigures << " training curves, " << files.tableColumns << " evaluations x " << files.tableRows
            << " metrics, " << files.deltaFigures << " delta panels, " << files.pcaFigures << " PCA figures -> "
            << files.html << " and " << files.markdown << "\n";
  return 0;
}

}  // namespace

Command addReportCommand(CLI::App& parent) {
  auto args = std::make_shared<ReportArgs>();
  Command cmd;
  cmd.app = parent.add_subcommand("report", "HTML and Markdown report of training runs, evaluations and predictions");
  cmd.app->add_option("run_dirs", args->runDirs, "run, evaluation or generation directories (searched 3 levels deep)")
      ->required();
  cmd.app->add_option("--out", args->out, "HTML file; the Markdown summary goes next to it (.md)")->capture_default_str();
  cmd.app->add_option("--pert-col", args->options.pertCol, "obs column with the perturbation labels (default: what the evaluations found used, else perturbation)");
  cmd.app->add_option("--control-pert", args->options.controlPert, "label of the control cells (default: what the evaluations found used, else non-targeting)");
  cmd.app->add_option("--max-perturbations", args->options.maxPerturbations,
                      "delta panels per prediction set (the perturbations with the most real cells)")
      ->capture_default_str();
  cmd.app->add_option("--max-pca-cells", args->options.maxPcaCells, "cells per side drawn in the PCA figure")
      ->capture_default_str();
  cmd.app->add_option("--seed", args->options.seed, "seed of the PCA figure's subsample")->capture_default_str();
  cmd.run = [args, app = cmd.app] {
    args->labelsGiven = app->count("--pert-col") + app->count("--control-pert") > 0;
    return runReport(*args);
  };
  return cmd;
}

}  // namespace latentcell::cli
