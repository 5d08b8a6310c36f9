// `latentcell evaluate`: scores predicted against real cells and writes, into --outdir,
//   - cell-eval's `cell-eval run` files (eval/CellEvalSuite.h): results.csv, agg_results.csv,
//     real_de.csv, pred_de.csv, named as cell-eval names them (prefixed by the cell type with
//     --celltype-col), for the profiles full, minimal, vcc, de, anndata and pds;
//   - distribution.csv (eval/DistributionSuite.h: W1, W2, MMD, FD per condition and averaged, the
//     scLDM/CFGen protocol) for the profiles full and distribution;
//   - reconstruction.csv (eval/ReconstructionSuite.h: paired reconstruction metrics) for the profile
//     reconstruction, which pairs the files by cell instead of running cell-eval's checks;
//   - summary.json: the run (profile, inputs, cell and gene counts, device, threads, seconds) and the
//     aggregate numbers of every table written.
// So a model's predictions are scored without a Python env, and the cell-eval numbers match cell-eval's.
#include "core/Device.h"
#include "data/H5ad.h"
#include "eval/CellEvalSuite.h"
#include "eval/DistributionSuite.h"
#include "eval/Parallel.h"
#include "eval/ReconstructionSuite.h"
#include "eval/StageLog.h"
#include "train/Commands.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <stdexcept>

namespace latentcell::cli {
namespace {

struct EvaluateArgs {
  std::string pred, real, pertCol = "target", controlPert = "non-targeting", celltypeCol, profile = "full";
  std::string outdir = "./cell-eval-outdir", device = "auto", predSpace = "auto";
  int threads = 0;
  bool noDistribution = false;
  int64_t distMaxCells = 0;
  uint64_t distSeed = 0;
};

// cell-eval's file names: "{prefix}_results.csv" etc., with '/' in cell-type names made '-'.
std::string outPath(const EvaluateArgs& a, const std::string& prefix, const std::string& name) {
  std::string p = prefix;
  std::replace(p.begin(), p.end(), '/', '-');
  return (std::filesystem::path(a.outdir) / (p.empty() ? name : p + "_" + name)).string();
}

// JSON has no NaN or inf: undefined numbers are null.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

nlohmann::json fileCounts(const data::AnnData& adata, const std::string& pertCol) {
  std::set<std::string> labels;
  if (const data::Column* c = adata.obs.find(pertCol))
    for (int64_t i = 0; i < adata.n_obs(); ++i) labels.insert(c->text(i));
  return {{"cells", adata.n_obs()}, {"genes", adata.n_vars()}, {"perturbations", labels.size()}};
}

// lastUse: no later stage reads the files, so their X is moved out instead of copied.
nlohmann::json runCellEval(const EvaluateArgs& a, data::AnnData& real, data::AnnData& pred,
                           const eval::CellEvalOptions& options, bool lastUse) {
  std::vector<std::pair<std::string, eval::CellEvalData>> reals, preds;
  if (a.celltypeCol.empty()) {
    for (auto [adata, out] : {std::pair{&real, &reals}, std::pair{&pred, &preds}}) {
      data::CsrMatrix x;
      if (lastUse) {  // cellEvalData then copies an X of the same shape without entries
        std::swap(x, adata->X);
        adata->X.rows = x.rows, adata->X.cols = x.cols;
      }
      out->emplace_back("", eval::cellEvalData(*adata, a.pertCol));
      if (lastUse) out->back().second.x = std::move(x);
    }
  } else {
    reals = eval::splitByCelltype(real, a.pertCol, a.celltypeCol);
    preds = eval::splitByCelltype(pred, a.pertCol, a.celltypeCol);
    if (reals.size() != preds.size())
      throw std::invalid_argument("Number of celltypes in real and pred anndata must match: " +
                                  std::to_string(reals.size()) + " != " + std::to_string(preds.size()));
  }
  nlohmann::json results = nlohmann::json::object();
  for (size_t i = 0; i < reals.size(); ++i) {
    const std::string& celltype = reals[i].first;
    // cell-eval pairs the splits by position of first appearance in each file, then checks them.
    const eval::CellEvalReport report =
        eval::evaluateCellEval(std::move(reals[i].second), std::move(preds[i].second), options);
    const eval::MetricTable agg = eval::describeMetrics(report.results);
    eval::writeMetricCsv(report.results, outPath(a, celltype, "results.csv"));
    eval::writeMetricCsv(agg, outPath(a, celltype, "agg_results.csv"));
    // The two DE tables (genes x targets rows each, formatted number by number) are written side by side.
    eval::parallelFor(2, options.threads, [&](int64_t side) {
      const auto& de = side == 0 ? report.realDe : report.predDe;
      if (de) eval::writeDeCsv(*de, outPath(a, celltype, side == 0 ? "real_de.csv" : "pred_de.csv"));
    });

    nlohmann::json means = nlohmann::json::object();
    for (size_t c = 0; c < agg.columns.size(); ++c) {
      const auto& mean = agg.values[c][2];
      means[agg.columns[c]] = mean ? number(*mean) : nlohmann::json();
    }
    results[celltype.empty() ? "all" : celltype] = {
        {"perturbations", report.results.rows.size()},
        {"normalised", {{"real", report.realNormalised}, {"pred", report.predNormalised}}},
        {"omitted", report.omitted},
        {"mean", means}};
    std::cout << (celltype.empty() ? std::string() : celltype + ": ") << report.results.rows.size()
              << " perturbations, " << report.results.columns.size() << " metrics -> "
              << outPath(a, celltype, "results.csv") << "\n";
    for (const auto& name : report.omitted) std::cout << "  not computed: " << name << "\n";
  }
  return results;
}

// The last stage to read the files: it takes them over and normalises their X in place.
nlohmann::json runDistribution(const EvaluateArgs& a, data::AnnData&& real, data::AnnData&& pred,
                               const c10::Device& device, int threads) {
  eval::DistributionOptions o;
  o.pertCol = a.pertCol;
  o.controlPert = a.controlPert;
  o.celltypeCol = a.celltypeCol;
  o.maxCells = a.distMaxCells;
  o.seed = a.distSeed;
  o.device = device;
  o.threads = threads;
  const eval::DistributionReport report = eval::evaluateDistribution(std::move(real), std::move(pred), o);
  const std::string path = outPath(a, "", "distribution.csv");
  eval::writeDistributionCsv(report, !a.celltypeCol.empty(), path);
  std::cout << report.rows.size() << " conditions, W1/W2/MMD/FD in " << report.components << " PCs of "
            << report.genes << " genes -> " << path << "\n";
  const eval::DistributionRow& m = report.mean;
  return {{"protocol",
           {{"reference", "scLDM App. J / CFGen (notes sec. 6)"},
            {"genes", report.genes},
            {"hvg_selected", report.hvgSelected},
            {"normalize_total_target", o.targetSum},
            {"normalised", {{"real", report.realNormalised}, {"pred", report.predNormalised}}},
            {"pca_components", report.components},
            {"pca_fitted_on", "all real cells"},
            {"mmd_sigmas", o.sigmas},
            {"mmd2_rbf", "biased, first min(n, m) cells"},
            {"mmd2_rbf_unbiased", "unbiased, all cells"},
            {"max_cells_per_condition", o.maxCells}}},
          {"conditions", report.rows.size()},
          {"mean",
           {{"w1", number(m.w1)},
            {"w2", number(m.w2)},
            {"mmd2_rbf", number(m.mmdBiased)},
            {"mmd2_rbf_unbiased", number(m.mmdUnbiased)},
            {"fd", number(m.fd)}}}};
}

nlohmann::json runReconstruction(const EvaluateArgs& a, const data::AnnData& real, const data::AnnData& pred,
                                 const c10::Device& device, int threads) {
  eval::ReconstructionOptions o;
  o.pertCol = a.pertCol;
  o.controlPert = a.controlPert;
  o.celltypeCol = a.celltypeCol;
  o.device = device;
  o.threads = threads;
  if (a.predSpace == "counts") o.predSpace = eval::ReconstructionSpace::Counts;
  else if (a.predSpace == "log1p") o.predSpace = eval::ReconstructionSpace::Log1p;
  else if (a.predSpace != "auto")
    throw std::invalid_argument("--pred-space '" + a.predSpace + "': use auto, counts or log1p");
  const eval::ReconstructionReport report = eval::evaluateReconstruction(real, pred, o);
  const std::string path = outPath(a, "", "reconstruction.csv");
  eval::writeReconstructionCsv(report, !a.celltypeCol.empty(), path);
  std::cout << report.rows.size() << " conditions, " << report.all.cells << " paired cells -> " << path << "\n";
  if (!report.hasControl)
    std::cout << "  not computed: deg_recall_at_100, logfc_spearman (no '" << a.controlPert << "' cells)\n";
  const eval::ReconstructionRow& r = report.all;
  return {{"pred_space", report.predSpace},
          {"theta_source", report.thetaSource},
          {"top_k", report.topK},
          {"conditions", report.rows.size()},
          {"all",
           {{"nb_error", number(r.nbError)},
            {"pcc", number(r.pcc)},
            {"mse", number(r.mse)},
            {"r2_sum", number(r.r2Sum)},
            {"deg_recall_at_100", number(r.degRecall)},
            {"logfc_spearman", number(r.logfcSpearman)}}}};
}

int runEvaluate(const EvaluateArgs& a) {
  const auto start = std::chrono::steady_clock::now();
  // The evaluators parallelise over perturbations and conditions with `threads` threads and keep
  // ATen's own threading at 1 in between (eval/Parallel.h says why).
  const int threads = a.threads > 0 ? a.threads : at::get_num_threads();
  at::set_num_threads(1);
  static const std::set<std::string> kProfiles = {"full", "minimal", "vcc", "de", "anndata", "pds",
                                                   "distribution", "reconstruction"};
  if (!kProfiles.count(a.profile))
    throw std::invalid_argument("unknown profile '" + a.profile +
                                "': use full, minimal, vcc, de, anndata, pds, distribution or reconstruction");
  const bool reconstruction = a.profile == "reconstruction";
  const bool distribution = a.profile == "distribution" || (a.profile == "full" && !a.noDistribution);
  const bool cellEval = !reconstruction && a.profile != "distribution";
  eval::CellEvalOptions options;
  options.controlPert = a.controlPert;
  options.threads = threads;
  if (cellEval) options.profile = eval::parseCellEvalProfile(a.profile);
  options.device = core::resolveDevice(a.device);

  nlohmann::json stages = nlohmann::json::object();  // wall seconds per stage
  eval::StageLog stageLog("evaluate");
  auto lap = [&, last = start](const std::string& stage) mutable {
    const auto now = std::chrono::steady_clock::now();
    stages[stage] = std::chrono::duration<double>(now - last).count();
    last = now;
    stageLog.lap(stage.c_str());
  };
  data::AnnData real = data::readH5ad(a.real), pred = data::readH5ad(a.pred);
  lap("read");
  std::filesystem::create_directories(a.outdir);
  nlohmann::json summary = {
      {"profile", a.profile},
      {"inputs",
       {{"real", a.real},
        {"pred", a.pred},
        {"pert_col", a.pertCol},
        {"control_pert", a.controlPert},
        {"celltype_col", a.celltypeCol}}},
      {"counts", {{"real", fileCounts(real, a.pertCol)}, {"pred", fileCounts(pred, a.pertCol)}}},
      {"device", options.device.str()},
      {"threads", threads}};
  if (cellEval) {
    summary["reference"] = "cell-eval 0.8.2 with pdex 0.3.0";
    summary["results"] = runCellEval(a, real, pred, options, /*lastUse=*/!distribution);
    lap("cell_eval");
  }
  if (distribution) {
    summary["distribution"] = runDistribution(a, std::move(real), std::move(pred), options.device, threads);
    lap("distribution");
  }
  if (reconstruction) {
    summary["reconstruction"] = runReconstruction(a, real, pred, options.device, threads);
    lap("reconstruction");
  }
  summary["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary["seconds_by_stage"] = stages;

  const std::string summaryPath = (std::filesystem::path(a.outdir) / "summary.json").string();
  std::ofstream out(summaryPath);
  out << summary.dump(2) << "\n";
  if (!out) throw std::runtime_error("failed writing " + summaryPath + " (disk full?)");
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
  cmd.app
      ->add_option("--profile", args->profile,
                   "metric set: cell-eval's full, minimal, vcc, de, anndata or pds (full adds distribution.csv); "
                   "distribution; or reconstruction (paired files)")
      ->capture_default_str();
  cmd.app->add_option("--outdir", args->outdir, "output directory")->capture_default_str();
  cmd.app->add_option("--device", args->device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  cmd.app->add_option("--threads", args->threads, "CPU threads (0: torch's default)")->capture_default_str();
  cmd.app->add_flag("--no-distribution", args->noDistribution,
                    "full profile: skip distribution.csv, writing exactly cell-eval's files");
  cmd.app->add_option("--dist-max-cells", args->distMaxCells,
                      "distribution metrics: at most this many cells per condition and side (0: all)")
      ->capture_default_str();
  cmd.app->add_option("--dist-seed", args->distSeed, "distribution metrics: seed of that subsample")
      ->capture_default_str();
  cmd.app->add_option("--pred-space", args->predSpace,
                      "reconstruction: pred X as auto (uns['reconstruction_space'], else counts), counts or log1p")
      ->capture_default_str();
  cmd.run = [args] { return runEvaluate(*args); };
  return cmd;
}

}  // namespace latentcell::cli
