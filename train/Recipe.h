// A recipe: one paper's pipeline (autoencoder, encode, prior, generate, evaluate, baselines) as one
// YAML file, run by `latentcell run` in one run directory.
//
// Each stage is the latentcell command a user would type (`train`, `encode`, `generate`, `evaluate`,
// `baseline`), run as a child process of the same binary: the stages stay exactly what the commands
// do, a stage's crash cannot take the runner's state with it, and a training stage can start its own
// data-parallel ranks (nproc_per_node). The recipe names the stage-1 and stage-2 configs (paths
// relative to the recipe file) plus overrides for each, and says where the data and the held-out
// cells are, once, for both stages.
//
// Run directory:
//   recipe.yaml          the resolved recipe; a later run in the same directory must resolve to the same
//   stages/NAME.done     written (atomically) when stage NAME finished: such stages are skipped
//   autoencoder/         stage-1 run (resumed from its latest checkpoint if interrupted)
//   latents.safetensors  `encode` of every cell
//   prior/               stage-2 run (resumed likewise)
//   generate/            pred.h5ad (generated held-out cells) and real.h5ad (the real ones)
//   eval/                the prior's metrics (cell-eval's files plus distribution.csv)
//   baselines/KIND.h5ad, baselines/KIND/   each mean baseline's predictions and metrics
#pragma once

#include "core/Config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::train {

struct RecipeDataConfig : core::ConfigSection {
  std::string path;
  std::vector<std::string> holdout;
  void visit(core::ConfigVisitor& v) override;
};

// One stage's config file and the overrides applied to it (on top of what the recipe sets).
struct RecipeStageConfig : core::ConfigSection {
  std::string config;
  std::vector<std::string> overrides;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct RecipeGenerateConfig : core::ConfigSection {
  std::string predict = "sample";
  double guidance = -1;
  int64_t steps = 0;
  std::string controls = "copy";
  void visit(core::ConfigVisitor& v) override;
};

struct RecipeEvaluateConfig : core::ConfigSection {
  std::string profile = "full";
  std::string context_column;
  void visit(core::ConfigVisitor& v) override;
};

struct RecipeConfig : core::ConfigSection {
  std::string task = "recipe";
  std::string name;
  int64_t seed = 0;
  std::string run_dir = "runs/recipe";
  int64_t nproc_per_node = 1;
  RecipeDataConfig data;
  RecipeStageConfig stage1, stage2;
  RecipeGenerateConfig generate;
  RecipeEvaluateConfig evaluate;
  std::vector<std::string> baselines{"perturb-mean", "context-mean", "cell-mean"};
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

// YAML flow values for `key=value` overrides: a double-quoted string, a list of them.
std::string yamlQuoted(const std::string& s);
std::string yamlList(const std::vector<std::string>& items);

// Loads a recipe file with command-line overrides. `stage1.KEY=V` and `stage2.KEY=V` (KEY other than
// `config` and `overrides`) are appended to that stage's overrides; other keys set the recipe's
// fields. Stage config paths are resolved against the recipe file's directory. Both stage configs are
// loaded with everything the run will pass them, so a bad key fails here, before any stage runs.
RecipeConfig loadRecipe(const std::string& path, const std::vector<std::string>& overrides);

// Runs the recipe's stages in order, skipping finished ones; `executable` is the latentcell binary the
// stages run as. Returns 0, or the exit code of the stage that failed (its name is logged).
int runRecipe(const RecipeConfig& recipe, const std::string& executable);

}  // namespace latentcell::train
