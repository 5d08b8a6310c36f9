// `latentcell train CONFIG [key.sub=value ...] [--resume RUN_DIR]`: trains what the config
// describes, or continues the run in RUN_DIR from its latest checkpoint.
#include "core/Config.h"
#include "core/Logging.h"
#include "train/Commands.h"
#include "train/Launcher.h"
#include "train/SmokeTask.h"
#include "train/Stage1Task.h"
#include "train/Stage2Task.h"

#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace latentcell::cli {

Command addTrainCommand(CLI::App& parent) {
  struct Args {
    std::string config;
    std::vector<std::string> overrides;
    std::string resume;
    int nproc = 1;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand("train", "Train a model from a YAML config (key.sub=value overrides follow)");
  cmd.app->add_option("config", args->config, "YAML config file")->required();
  cmd.app->add_option("overrides", args->overrides, "config overrides, e.g. trainer.optimizer.lr=1e-3 model.dim=64");
  cmd.app->add_option("--resume", args->resume, "continue the run in this directory from its latest checkpoint");
  cmd.app->add_option("--nproc-per-node", args->nproc,
                      "start this many data-parallel ranks on this machine (under torchrun or srun, leave at 1)")
      ->check(CLI::PositiveNumber);
  cmd.run = [args] {
    if (args->nproc > 1) {
      if (std::getenv("RANK") != nullptr) {
        throw std::invalid_argument("--nproc-per-node is for starting ranks; this process already is rank " +
                                    std::string(std::getenv("RANK")) + " (drop the option under torchrun or srun)");
      }
      if (const char* tasks = std::getenv("SLURM_NTASKS"); tasks != nullptr && std::atoi(tasks) > 1) {
        throw std::invalid_argument(std::string("--nproc-per-node under srun with SLURM_NTASKS=") + tasks +
                                    ": srun already starts the ranks; drop the option");
      }
      std::vector<std::string> child;  // the same command line without --nproc-per-node
      const auto& all = commandLine();
      child.push_back(train::currentExecutable());
      for (size_t i = 1; i < all.size(); ++i) {
        if (all[i] == "--nproc-per-node") {
          ++i;
          continue;
        }
        if (all[i].rfind("--nproc-per-node=", 0) == 0) continue;
        child.push_back(all[i]);
      }
      return train::launchLocal(args->nproc, child);
    }
    auto overrides = args->overrides;
    if (!args->resume.empty()) overrides.push_back("run_dir=" + args->resume);
    // The config's `task` picks the config struct and what is trained.
    const auto task = core::peekConfigString(args->config, "task", overrides);
    train::TrainSummary summary;
    if (task == "smoke" || task.empty()) {
      train::SmokeConfig config;
      core::loadConfigFile(config, args->config, overrides);
      summary = train::runSmokeTask(config, !args->resume.empty(), commandLine());
    } else if (task == "stage1") {
      train::Stage1Config config;
      core::loadConfigFile(config, args->config, overrides);
      summary = train::runStage1Task(config, !args->resume.empty(), commandLine());
    } else if (task == "stage2") {
      train::Stage2Config config;
      core::loadConfigFile(config, args->config, overrides);
      summary = train::runStage2Task(config, !args->resume.empty(), commandLine());
    } else {
      throw core::ConfigError("task \"" + task + "\" in " + args->config +
                              " is not one of smoke, stage1, stage2; set task to what should be trained");
    }
    core::logInfo("loss {:.5f} -> {:.5f}; {} steps; checkpoint {}", summary.first_loss, summary.last_loss,
                  summary.steps, summary.last_checkpoint);
    return 0;
  };
  return cmd;
}

}  // namespace latentcell::cli
