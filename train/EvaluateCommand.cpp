// `latentcell evaluate`: cell-eval's `cell-eval run` on two h5ad files (eval/CellEvalSuite.h), writing
// results.csv, agg_results.csv, real_de.csv and pred_de.csv as cell-eval names them (prefixed by the
// cell type with --celltype-col) plus summary.json with the aggregate means, so that a model's
// predictions are scored without a Python env and the numbers match cell-eval's.
#include "core/Device.h"
#include "data/H5ad.h"
#include "eval/CellEvalSuite.h"
#include "train/Commands.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>

namespace latentcell::cli {
namespace {

struct EvaluateArgs {
  std::string pred, real, pertCol = "target", controlPert = "non-targeting", celltypeCol, profile = "full";
  std::string outdir = "./cell-eval-outdir", device = "auto";
  int threads = 0;
};

// cell-eval's file names: "{prefix}_results.csv" etc., with '/' in cell-type names made '-'.
std::string outPath(const EvaluateArgs& a, const std::string& prefix, const std::string& name) {
  std::string p = prefix;
  std::replace(p.begin(), p.end(), '/', '-');
  return (std::filesystem::path(a.outdir) / (p.empty() ? name : p + "_" + name)).string();
}

int runEvaluate(const EvaluateArgs& a) {
  if (a.threads > 0) at::set_num_threads(a.threads);
  eval::CellEvalOptions options;
  options.controlPert = a.controlPert;
  options.profile = eval::parseCellEvalProfile(a.profile);
  options.device = core::resolveDevice(a.device);

  const data::AnnData real = data::readH5ad(a.real), pred = data::readH5ad(a.pred);
  std::vector<std::pair<std::string, eval::CellEvalData>> reals, preds;
  if (a.celltypeCol.empty()) {
    reals.emplace_back("", eval::cellEvalData(real, a.pertCol));
    preds.emplace_back("", eval::cellEvalData(pred, a.pertCol));
  } else {
    reals = eval::splitByCelltype(real, a.pertCol, a.celltypeCol);
    preds = eval::splitByCelltype(pred, a.pertCol, a.celltypeCol);
    if (reals.size() != preds.size())
      throw std::invalid_argument("Number of celltypes in real and pred anndata must match: " +
                                  std::to_string(reals.size()) + " != " + std::to_string(preds.size()));
  }
  std::filesystem::create_directories(a.outdir);

  nlohmann::json summary = {{"real", a.real},       {"pred", a.pred},
                            {"pert_col", a.pertCol}, {"control_pert", a.controlPert},
                            {"profile", a.profile},  {"device", options.device.str()},
                            {"reference", "cell-eval 0.8.2 with pdex 0.3.0"}};
  for (size_t i = 0; i < reals.size(); ++i) {
    const std::string& celltype = reals[i].first;
    // cell-eval pairs the splits by position of first appearance in each file, then checks them.
    const eval::CellEvalReport report =
        eval::evaluateCellEval(std::move(reals[i].second), std::move(preds[i].second), options);
    const eval::MetricTable agg = eval::describeMetrics(report.results);
    eval::writeMetricCsv(report.results, outPath(a, celltype, "results.csv"));
    eval::writeMetricCsv(agg, outPath(a, celltype, "agg_results.csv"));
    if (report.realDe) eval::writeDeCsv(*report.realDe, outPath(a, celltype, "real_de.csv"));
    if (report.predDe) eval::writeDeCsv(*report.predDe, outPath(a, celltype, "pred_de.csv"));

    nlohmann::json means = nlohmann::json::object();
    for (size_t c = 0; c < agg.columns.size(); ++c) {
      const auto& mean = agg.values[c][2];
      // JSON has no NaN: undefined means are null.
      means[agg.columns[c]] = mean && std::isfinite(*mean) ? nlohmann::json(*mean) : nlohmann::json();
    }
    nlohmann::json entry = {{"perturbations", report.results.rows.size()},
                            {"normalised", {{"real", report.realNormalised}, {"pred", report.predNormalised}}},
                            {"omitted", report.omitted},
                            {"mean", means}};
    summary["results"][celltype.empty() ? "all" : celltype] = entry;
    std::cout << (celltype.empty() ? std::string() : celltype + ": ") << report.results.rows.size()
              << " perturbations, " << report.results.columns.size() << " metrics -> "
              << outPath(a, celltype, "results.csv") << "\n";
    for (const auto& name : report.omitted) std::cout << "  not computed: " << name << "\n";
  }
  const std::string summaryPath = (std::filesystem::path(a.outdir) / "summary.json").string();
  std::ofstream(summaryPath) << summary.dump(2) << "\n";
  return 0;
}

}  // namespace

Command addEvaluateCommand(CLI::App& parent) {
  auto args = std::make_shared<EvaluateArgs>();
  Command cmd;
  cmd.app = parent.add_subcommand("evaluate", "Score predicted against real cells with cell-eval's metrics");
  cmd.app->add_option("--pred", args->pred, "predicted cells (.h5ad)")->required();
  cmd.app->add_option("--real", args->real, "real cells (.h5ad), same var_names and perturbations")->required();
  cmd.app->add_option("--pert-col", args->pertCol, "obs column with the perturbation labels")->capture_default_str();
  cmd.app->add_option("--control-pert", args->controlPert, "label of the control cells")->capture_default_str();
  cmd.app->add_option("--celltype-col", args->celltypeCol, "obs column to evaluate each cell type separately");
  cmd.app->add_option("--profile", args->profile, "metric set: full, minimal, vcc, de, anndata or pds")
      ->capture_default_str();
  cmd.app->add_option("--outdir", args->outdir, "output directory")->capture_default_str();
  cmd.app->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd.app->add_option("--threads", args->threads, "CPU threads (0: torch's default)")->capture_default_str();
  cmd.run = [args] { return runEvaluate(*args); };
  return cmd;
}

}  // namespace latentcell::cli
