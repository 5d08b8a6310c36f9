// `latentcell train CONFIG [key.sub=value ...]`: trains what the config describes.
#include "core/Config.h"
#include "core/Logging.h"
#include "train/Commands.h"
#include "train/SmokeTask.h"

#include <memory>
#include <string>
#include <vector>

namespace latentcell::cli {

Command addTrainCommand(CLI::App& parent) {
  struct Args {
    std::string config;
    std::vector<std::string> overrides;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("train", "Train a model from a YAML config (key.sub=value overrides follow)");
  cmd.app->add_option("config", args->config, "YAML config file")->required();
  cmd.app->add_option("overrides", args->overrides, "config overrides, e.g. optim.lr=1e-3 model.dim=64");
  cmd.run = [args] {
    train::SmokeConfig config;
    core::loadConfigFile(config, args->config, args->overrides);
    const auto result = train::runSmokeTask(config);
    if (result.losses.size() >= 2) {
      core::logInfo("loss {:.5f} -> {:.5f}", result.losses.front(), result.losses.back());
    }
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
