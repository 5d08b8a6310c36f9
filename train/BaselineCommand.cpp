// `latentcell baseline --kind cell-mean|perturb-mean|context-mean --train TRAIN.h5ad --like REAL.h5ad
// --out pred.h5ad`: writes a baseline's predictions for every cell of REAL (eval/Baselines.h says what
// each kind computes), in cell-eval's log1p space, ready for `latentcell evaluate` or `cell-eval run`
// against REAL. With --train-split PRIOR_RUN, TRAIN is that prior's data file and only the cells of
// its training split are used, so the baseline learns from exactly the cells the prior did.
#include "data/H5ad.h"
#include "eval/Baselines.h"
#include "train/Commands.h"
#include "train/Stage2Task.h"

#include <iostream>
#include <memory>
#include <string>

namespace latentcell::cli {

Command addBaselineCommand(CLI::App& parent) {
  struct Args {
    std::string kind, train, like, out, train_split;
    eval::BaselineOptions options;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("baseline", "Write a mean baseline's predictions for the cells of a real h5ad");
  cmd.app->add_option("--kind", args->kind, "cell-mean, perturb-mean or context-mean")->required();
  cmd.app->add_option("--train", args->train, "training cells (.h5ad) the means are taken from")->required();
  cmd.app->add_option("--train-split", args->train_split,
                      "a stage-2 run trained on --train: use only the cells of its training split");
  cmd.app->add_option("--like", args->like, "real cells (.h5ad) to predict: same cells, obs and var in the output")
      ->required();
  cmd.app->add_option("--out", args->out, "output .h5ad (log1p-normalised predictions)")->required();
  cmd.app->add_option("--pert-col", args->options.pertCol, "obs column with the perturbation labels")
      ->capture_default_str();
  cmd.app->add_option("--control-pert", args->options.controlPert, "label of the control cells")
      ->capture_default_str();
  cmd.app->add_option("--celltype-col", args->options.celltypeCol,
                      "obs column with the context (cell type / line); default: one context");
  cmd.run = [args] {
    args->options.kind = eval::parseBaselineKind(args->kind);
    data::AnnData train = data::readH5ad(args->train);
    const data::AnnData like = data::readH5ad(args->like);
    if (!args->train_split.empty()) {
      const auto rows = train::priorTrainingRows(args->train_split, train.obs, train.source);
      train.X = data::takeRows(train.X, rows);
      train.obs = data::takeRows(train.obs, rows);
      train.obsm.clear();
    }
    eval::BaselineReport report;
    const data::AnnData out = eval::makeBaseline(train, like, args->options, &report);
    data::writeH5ad(out, args->out);
    std::cout << args->kind << ": " << report.predictedCells << " cells predicted, " << report.controlCells
              << " control cells copied -> " << args->out << "\n";
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
