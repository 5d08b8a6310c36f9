// `latentcell export --run RUN_DIR --out model.safetensors`: a trained stage-1 or stage-2 run as one
// self-contained safetensors file (train/Export.h, docs/export.md) that `reconstruct --run`,
// `encode --run` and `generate --prior` accept in place of the run directory.
#include "core/Logging.h"
#include "train/Commands.h"
#include "train/Export.h"

#include <memory>
#include <string>

namespace latentcell::cli {

Command addExportCommand(CLI::App& parent) {
  struct Args {
    std::string run, out;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("export", "Write a trained run's (EMA) weights and records to one .safetensors file");
  cmd.app->add_option("--run", args->run, "stage-1 or stage-2 run directory")->required();
  cmd.app->add_option("--out", args->out, "output .safetensors file")->required();
  cmd.run = [args] {
    const auto summary = train::exportRun(args->run, args->out);
    core::logInfo("exported the {} run {}: {} tensors, {:.1f} MiB -> {}", summary.kind, args->run, summary.tensors,
                  static_cast<double>(summary.bytes) / (1 << 20), args->out);
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
