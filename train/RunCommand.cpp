// `latentcell run RECIPE [--data FILE.h5ad] [--split RULE]... [--run-dir DIR] [key=value ...]`: runs a
// recipe's stages (train/Recipe.h) in one run directory, skipping the finished ones, so the same
// command continues a run that stopped.
#include "train/Commands.h"
#include "train/Launcher.h"
#include "train/Recipe.h"

#include <memory>
#include <string>
#include <vector>

namespace latentcell::cli {

Command addRunCommand(CLI::App& parent) {
  struct Args {
    std::string recipe, data, run_dir;
    std::vector<std::string> split, overrides;
  };
  auto args = std::make_shared<Args>();
  Command cmd;
  cmd.app = parent.add_subcommand(
      "run", "Run a recipe end to end (autoencoder, encode, prior, generate, evaluate, baselines) in one run directory");
  cmd.app->add_option("recipe", args->recipe, "recipe YAML (task: recipe), e.g. configs/recipes/scldm-cpu.yaml")
      ->required();
  cmd.app->add_option("overrides", args->overrides,
                      "recipe overrides; stage1.KEY=V and stage2.KEY=V override the stages' configs, e.g. "
                      "stage2.trainer.max_steps=500");
  cmd.app->add_option("--data", args->data, "h5ad file with raw counts (sets data.path)");
  cmd.app->add_option("--split", args->split,
                      "held-out rule 'col=v1,v2; col2=v3', repeatable (sets data.holdout): the cells generated "
                      "and evaluated, never trained on")
      ->allow_extra_args(false);  // one rule per --split, so overrides may follow it
  cmd.app->add_option("--run-dir", args->run_dir, "run directory (sets run_dir)");
  cmd.run = [args] {
    auto overrides = args->overrides;
    if (!args->data.empty()) overrides.push_back("data.path=" + train::yamlQuoted(args->data));
    if (!args->split.empty()) {
      overrides.push_back("data.holdout=" + train::yamlList(args->split));
    }
    if (!args->run_dir.empty()) overrides.push_back("run_dir=" + train::yamlQuoted(args->run_dir));
    const auto recipe = train::loadRecipe(args->recipe, overrides);
    return train::runRecipe(recipe, train::currentExecutable());
  };
  return cmd;
}

}  // namespace latentcell::cli
