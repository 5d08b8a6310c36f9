// `latentcell simulate --out FILE.h5ad ...`: writes a simulated perturbation screen with known
// effects (data/Simulator.h), for demos, tests and benchmarks without downloading data.
#include "core/Logging.h"
#include "data/H5ad.h"
#include "data/Simulator.h"
#include "train/Commands.h"

#include <memory>
#include <string>

namespace latentcell::cli {

Command addSimulateCommand(CLI::App& parent) {
  struct Args {
    std::string out;
    data::SimulatorOptions options;
  };
  auto args = std::make_shared<Args>();
  auto& o = args->options;
  Command cmd;
  cmd.app = parent.add_subcommand(
      "simulate", "Write a simulated perturbation screen (negative-binomial counts, known effects) as h5ad");
  cmd.app->add_option("--out", args->out, "output .h5ad file")->required();
  cmd.app->add_option("--cells", o.cells, "number of cells")->capture_default_str();
  cmd.app->add_option("--genes", o.genes, "number of genes")->capture_default_str();
  cmd.app->add_option("--cell-types", o.cell_types, "number of cell types")->capture_default_str();
  cmd.app->add_option("--perturbations", o.perturbations, "number of perturbations besides control")
      ->capture_default_str();
  cmd.app->add_option("--batches", o.batches, "number of batches")->capture_default_str();
  cmd.app->add_option("--seed", o.seed, "random seed (same seed, same file)")->capture_default_str();
  cmd.app->add_option("--control-fraction", o.control_fraction,
                      "share of control cells (default 1 / (perturbations + 1))");
  cmd.app->add_option("--library-size", o.library_size, "median library size of control cells")
      ->capture_default_str();
  cmd.run = [args] {
    const data::AnnData adata = data::simulate(args->options);
    data::writeH5ad(adata, args->out);
    const auto& o = args->options;
    core::logInfo("wrote {}: {} cells x {} genes ({} stored counts), {} cell types, {} perturbations + control, "
                  "{} batches, seed {}",
                  args->out, adata.n_obs(), adata.n_vars(), adata.X.nnz(), o.cell_types, o.perturbations, o.batches,
                  o.seed);
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
