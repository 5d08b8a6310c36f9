// `latentcell encode --run RUN_DIR --data FILE.h5ad --out latents.safetensors`: per-cell latents of
// a trained autoencoder, what stage-2 priors train on.
//
// The file holds `latent` ([cells, L, d] float32 Gaussian means or raw latents, or [cells, L] int64
// FSQ code indices) and `library` ([cells] observed library sizes, for the generation-time
// library-size model), in the data's cell order after the run's exclusions. The metadata carries
// what a prior needs to pair the rows with their conditions without rereading the h5ad: the
// obs_names and every categorical or string obs column (JSON), the latent kind and the run.
#include "core/Device.h"
#include "core/Logging.h"
#include "core/Safetensors.h"
#include "train/Commands.h"
#include "train/Stage1Task.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <memory>
#include <string>

namespace latentcell::cli {

Command addEncodeCommand(CLI::App& parent) {
  struct Args {
    std::string run, data, out, matrix, cells = "all", device = "auto";
    int64_t batch_size = 256;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("encode", "Write per-cell latents of a trained autoencoder (for priors)");
  cmd.app->add_option("--run", args->run, "stage-1 run directory, or a `latentcell export` file")->required();
  cmd.app->add_option("--data", args->data, "h5ad file with the cells to encode")->required();
  cmd.app->add_option("--out", args->out, "output .safetensors file")->required();
  cmd.app->add_option("--matrix", args->matrix, "counts matrix: X, layers/NAME or raw/X (default: the run's)");
  cmd.app->add_option("--cells", args->cells, "all, or the run's train or val cells (same data file)")
      ->check(CLI::IsMember({"all", "train", "val"}));
  cmd.app->add_option("--batch-size", args->batch_size, "cells per forward pass")->check(CLI::PositiveNumber);
  cmd.app->add_option("--device", args->device, "auto, cpu, cuda or cuda:N");
  cmd.run = [args] {
    const auto device = core::resolveDevice(args->device);
    auto run = train::loadStage1Run(args->run, device);
    auto data = train::loadRunData(run, args->data, args->matrix);
    const auto rows = train::runCells(args->run, args->cells, data.cells.n_obs());

    std::vector<at::Tensor> latents;
    train::forEachBatch(run, data, rows, args->batch_size, device,
                        [&](const std::vector<int64_t>&, const models::CellBatch& batch) {
                          latents.push_back(run.model->encodeLatent(batch).cpu());
                        });
    auto latent = torch::cat(latents, 0);
    std::vector<float> library;
    nlohmann::json obs;
    obs["obs_names"] = nlohmann::json::array();
    for (int64_t r : rows) {
      library.push_back(data.library[static_cast<size_t>(r)]);
      obs["obs_names"].push_back(data.cells.obs.index[static_cast<size_t>(r)]);
    }
    for (const auto& [name, column] : data.cells.obs.columns) {
      if (column.kind != data::Column::Kind::Categorical && column.kind != data::Column::Kind::String) continue;
      auto& values = obs["columns"][name] = nlohmann::json::array();
      for (int64_t r : rows) values.push_back(column.text(r));
    }
    std::map<std::string, std::string> meta{
        {"format", "latentcell.latents.v1"},
        {"kind", run.model->discreteLatent() ? "codes" : "continuous"},
        {"codebook_size", std::to_string(run.model->discreteLatent() ? run.model->latentWidth() : 0)},
        {"run", args->run},
        {"checkpoint", run.checkpoint},
        {"data", args->data},
        {"obs", obs.dump()}};
    core::saveSafetensors(args->out, {{"latent", latent}, {"library", torch::tensor(library)}}, meta);
    core::logInfo("encoded {} cells -> {} {} ({})", rows.size(), args->out, latent.sizes(), meta["kind"]);
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
