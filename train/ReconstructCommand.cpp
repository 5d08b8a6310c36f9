// `latentcell reconstruct --run RUN_DIR --data FILE.h5ad --out recon.h5ad [--predict sample|mean|log1p_mean]
// [--real-out real.h5ad]`:
// every cell encoded and decoded by a trained autoencoder, written as an h5ad with the input's
// obs and the model's genes, so reconstruction metrics (`latentcell evaluate --profile
// reconstruction`) can pair it with the real cells row by row.
//
// X holds the head's predictions in the head's space: counts for count heads (NB, ce-quant),
// log1p(x / l * 1e4) for the MSE and hurdle heads, for PCA and for `--predict log1p_mean` (every
// head's predictive mean of that value, heads/OutputHead.h); uns["latentcell_value_space"] says
// which (and uns["reconstruction_space"], with var["nb_theta"] for an NB head with gene
// dispersion, as `latentcell evaluate --profile reconstruction` reads them). Encoding uses the latent's deterministic form (Gaussian means), so only `--predict sample`
// draws, from a generator seeded by --seed.
#include "core/Device.h"
#include "core/Logging.h"
#include "core/Random.h"
#include "data/H5ad.h"
#include "heads/OutputHead.h"
#include "train/Commands.h"
#include "train/Stage1Task.h"

#include <torch/torch.h>

#include <memory>
#include <string>

namespace latentcell::cli {

Command addReconstructCommand(CLI::App& parent) {
  struct Args {
    std::string run, data, out, real_out, matrix, cells = "all", device = "auto", predict = "mean";
    int64_t batch_size = 256;
    int64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("reconstruct", "Encode and decode cells with a trained autoencoder");
  cmd.app->add_option("--run", args->run, "stage-1 run directory, or a `latentcell export` file")->required();
  cmd.app->add_option("--data", args->data, "h5ad file with the cells to reconstruct")->required();
  cmd.app->add_option("--out", args->out, "output .h5ad file")->required();
  cmd.app->add_option("--real-out", args->real_out,
                      "also write the same real cells on the model's genes (the pairing file for "
                      "`evaluate --profile reconstruction`)");
  cmd.app->add_option("--predict", args->predict,
                      "sample from the head, its mean, or its mean of log1p(x / l * 1e4) (the point prediction "
                      "for log1p-space MSE)")
      ->check(CLI::IsMember({"sample", "mean", "log1p_mean"}));
  cmd.app->add_option("--matrix", args->matrix, "counts matrix: X, layers/NAME or raw/X (default: the run's)");
  cmd.app->add_option("--cells", args->cells, "all, or the run's train or val cells (same data file)")
      ->check(CLI::IsMember({"all", "train", "val"}));
  cmd.app->add_option("--batch-size", args->batch_size, "cells per forward pass")->check(CLI::PositiveNumber);
  cmd.app->add_option("--seed", args->seed, "seed of --predict sample");
  cmd.app->add_option("--device", args->device, "auto, cpu, cuda or cuda:N");
  cmd.run = [args] {
    const auto device = core::resolveDevice(args->device);
    auto run = train::loadStage1Run(args->run, device);
    auto data = train::loadRunData(run, args->data, args->matrix);
    const auto rows = train::runCells(args->run, args->cells, data.cells.n_obs());
    const auto mode = heads::parsePredictMode(args->predict);
    auto generator = core::makeGenerator(static_cast<uint64_t>(args->seed));

    data::AnnData out;
    out.X.cols = static_cast<int64_t>(run.genes.size());
    out.X.indptr.push_back(0);
    train::forEachBatch(run, data, rows, args->batch_size, device,
                        [&](const std::vector<int64_t>&, const models::CellBatch& batch) {
                          auto latent = run.model->encodeLatent(batch);
                          auto pred = run.model->predict(latent, batch.library, mode, generator)
                                          .to(torch::kFloat)
                                          .cpu()
                                          .contiguous();  // [batch, genes]
                          const auto* p = pred.data_ptr<float>();
                          for (int64_t i = 0; i < pred.size(0); ++i) {
                            for (int64_t g = 0; g < pred.size(1); ++g) {
                              const float v = p[i * pred.size(1) + g];
                              if (v != 0.0f) {
                                out.X.indices.push_back(static_cast<int32_t>(g));
                                out.X.data.push_back(v);
                              }
                            }
                            out.X.indptr.push_back(static_cast<int64_t>(out.X.data.size()));
                          }
                          out.X.rows += pred.size(0);
                        });
    out.var.index = run.genes;
    out.obs = data::takeRows(data.cells.obs, rows);
    const bool counts = run.model->valueSpace() == heads::ValueSpace::Counts && mode != heads::PredictMode::Log1pMean;
    out.uns_strings["latentcell_value_space"] = counts ? "counts" : "log1p_normalized";
    // The contract of `latentcell evaluate --profile reconstruction` (eval/ReconstructionSuite.h).
    out.uns_strings["reconstruction_space"] = counts ? "counts" : "log1p";
    if (const auto theta = run.model->geneDispersion(); !theta.empty()) {
      data::Column column;
      column.kind = data::Column::Kind::Float;
      column.floats.assign(theta.begin(), theta.end());
      out.var.columns.emplace_back("nb_theta", std::move(column));
    }
    out.uns_strings["latentcell_run"] = args->run;
    out.uns_strings["latentcell_predict"] = args->predict;
    data::writeH5ad(out, args->out);
    if (!args->real_out.empty()) {
      data::AnnData real;
      real.X = data::takeRows(data.cells.X, rows);
      real.obs = out.obs;
      real.var.index = run.genes;
      data::writeH5ad(real, args->real_out);
    }
    core::logInfo("reconstructed {} cells x {} genes ({} {}) -> {}", out.X.rows, out.X.cols,
                  out.uns_strings["latentcell_value_space"], args->predict, args->out);
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
