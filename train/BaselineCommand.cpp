// `latentcell baseline --kind cell-mean|perturb-mean|context-mean --train TRAIN.h5ad --like REAL.h5ad
// --out pred.h5ad`: writes a baseline's predictions for every cell of REAL (eval/Baselines.h says what
// each kind computes), in cell-eval's log1p space, ready for `latentcell evaluate` or `cell-eval run`
// against REAL.
#include "data/H5ad.h"
#include "eval/Baselines.h"
#include "train/Commands.h"

#include <iostream>
#include <memory>
#include <string>

namespace latentcell::cli {

Command addBaselineCommand(CLI::App& parent) {
  struct Args {
    std::string kind, train, like, out;
    eval::BaselineOptions options;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("baseline", "Write a mean baseline's predictions for the cells of a real h5ad");
  cmd.app->add_option("--kind", args->kind, "cell-mean, perturb-mean or context-mean")->required();
  cmd.app->add_option("--train", args->train, "training cells (.h5ad) the means are taken from")->required();
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
    const data::AnnData train = data::readH5ad(args->train), like = data::readH5ad(args->like);
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
