// Recipe loading and the stage runner (see Recipe.h for the run directory's layout).
//
// A stage counts as finished only through its marker, written by rename after the command exited 0,
// so an interrupted stage is run again on the next `latentcell run`; a training stage that has
// checkpoints continues from its latest one (`train --resume`), the others are cheap to redo and
// rewrite their outputs. recipe.yaml pins what the directory was made with: running a changed recipe
// into it would mix stages of two recipes, so that is an error naming the first difference.
#include "train/Recipe.h"

#include "core/Logging.h"
#include "train/Launcher.h"
#include "train/Stage1Task.h"
#include "train/Stage2Task.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace latentcell::train {

namespace fs = std::filesystem;

void RecipeDataConfig::visit(core::ConfigVisitor& v) {
  v.field("path", path, "h5ad file with raw counts for both stages (`--data`); empty = each stage config's own");
  v.field("holdout", holdout,
          "held-out rules 'col=v1,v2; col2=v3' (`--split`): the test cells, never trained on by either stage, "
          "that are generated and evaluated; empty = the stage-2 config's");
}

void RecipeStageConfig::visit(core::ConfigVisitor& v) {
  v.field("config", config, "the stage's YAML config, relative to the recipe file");
  v.field("overrides", overrides, "key=value overrides of that config, e.g. [trainer.max_steps=500]");
}

void RecipeStageConfig::validate() const {
  if (config.empty()) reject("config", "is required: the path of the stage's config file");
}

void RecipeGenerateConfig::visit(core::ConfigVisitor& v) {
  v.choice("predict", predict, {"sample", "mean"}, "decode by sampling the head, or its mean");
  v.field("guidance", guidance, "classifier-free guidance weight w of the flow prior; negative = the prior's config");
  v.field("steps", steps, "sampler steps; 0 = the prior's config");
  v.choice("controls", controls, {"copy", "generate"}, "copy the real control cells, or generate them too");
}

void RecipeEvaluateConfig::visit(core::ConfigVisitor& v) {
  v.choice("profile", profile, {"full", "minimal", "vcc", "de", "anndata", "pds", "distribution"}, "`latentcell evaluate --profile`");
  v.field("context_column", context_column,
          "the baselines' context column (cell type / line); empty = the first stage-2 condition that is not "
          "the perturbation");
}

void RecipeConfig::visit(core::ConfigVisitor& v) {
  v.choice("task", task, {"recipe"}, "marks the file as a recipe for `latentcell run`");
  v.field("name", name, "the recipe's name, for logs and reports");
  v.field("seed", seed, "seed of both stages and of generation");
  v.field("run_dir", run_dir, "run directory holding every stage (`--run-dir`)");
  v.field("nproc_per_node", nproc_per_node, "data-parallel ranks of the training stages on this machine");
  v.section("data", data, "data and held-out cells, passed to both stages");
  v.section("stage1", stage1, "the autoencoder");
  v.section("stage2", stage2, "the prior");
  v.section("generate", generate, "generating the held-out cells");
  v.section("evaluate", evaluate, "scoring the generated cells and the baselines");
  v.field("baselines", baselines, "mean baselines scored beside the prior: perturb-mean, context-mean, cell-mean");
}

void RecipeConfig::validate() const {
  if (nproc_per_node < 1) reject("nproc_per_node", "must be at least 1");
  for (const auto& b : baselines) {
    if (b != "perturb-mean" && b != "context-mean" && b != "cell-mean") {
      reject("baselines", "'" + b + "' is not one of perturb-mean, context-mean, cell-mean");
    }
  }
}

namespace {

std::string runPath(const RecipeConfig& r, const std::string& part) { return (fs::path(r.run_dir) / part).string(); }

// What the recipe sets in a stage's config, then the stage's own overrides (which win).
std::vector<std::string> stage1Overrides(const RecipeConfig& r) {
  std::vector<std::string> o{"run_dir=" + runPath(r, "autoencoder"), "seed=" + std::to_string(r.seed)};
  if (!r.data.path.empty()) o.push_back("data.path=" + yamlQuoted(r.data.path));
  if (!r.data.holdout.empty()) o.push_back("data.holdout=" + yamlList(r.data.holdout));
  o.insert(o.end(), r.stage1.overrides.begin(), r.stage1.overrides.end());
  return o;
}

std::vector<std::string> stage2Overrides(const RecipeConfig& r) {
  std::vector<std::string> o{"run_dir=" + runPath(r, "prior"), "seed=" + std::to_string(r.seed),
                             "autoencoder=" + yamlQuoted(runPath(r, "autoencoder")),
                             "data.latents=" + yamlQuoted(runPath(r, "latents.safetensors"))};
  if (!r.data.path.empty()) o.push_back("data.path=" + yamlQuoted(r.data.path));
  if (!r.data.holdout.empty()) o.push_back("data.holdout=" + yamlList(r.data.holdout));
  o.insert(o.end(), r.stage2.overrides.begin(), r.stage2.overrides.end());
  return o;
}

Stage1Config resolvedStage1(const RecipeConfig& r) {
  Stage1Config c;
  core::loadConfigFile(c, r.stage1.config, stage1Overrides(r));
  return c;
}

Stage2Config resolvedStage2(const RecipeConfig& r) {
  Stage2Config c;
  core::loadConfigFile(c, r.stage2.config, stage2Overrides(r));
  return c;
}

void writeFileAtomically(const std::string& path, const std::string& text) {
  const auto tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The first line where two texts differ, for the "different recipe" error.
std::string firstDifference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ga = static_cast<bool>(std::getline(sa, la)), gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "";
    if (!ga) la = "<end>";
    if (!gb) lb = "<end>";
    if (la != lb) {
      auto value = [](const std::string& l) { return l.substr(0, l.find("  # ")); };  // without the help comment
      return "line " + std::to_string(line) + ": '" + value(la) + "' there, '" + value(lb) + "' now";
    }
  }
}

std::string now() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string joined(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    const bool plain = a.find_first_of(" \t;\"'[]$") == std::string::npos && !a.empty();
    out += (out.empty() ? "" : " ") + (plain ? a : "'" + a + "'");
  }
  return out;
}

struct Stage {
  std::string name;
  std::vector<std::vector<std::string>> commands;  // run in order; argv[0] is the subcommand
};

}  // namespace

std::string yamlQuoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string yamlList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + yamlQuoted(items[i]);
  return out + "]";
}

RecipeConfig loadRecipe(const std::string& path, const std::vector<std::string>& overrides) {
  if (!fs::is_regular_file(path)) throw core::ConfigError("recipe " + path + " does not exist or is not a file");
  const auto task = core::peekConfigString(path, "task");
  if (task != "recipe") {
    throw core::ConfigError(path + " is not a recipe (task: " + (task.empty() ? "<unset>" : task) +
                            "); `latentcell run` takes a file with task: recipe, e.g. configs/recipes/scldm-cpu.yaml "
                            "(a stage's config is trained with `latentcell train`)");
  }
  std::vector<std::string> own, extra1, extra2;
  for (const auto& o : overrides) {
    const auto key = o.substr(0, o.find('='));
    auto* target = &own;
    for (auto [prefix, list] : {std::pair{std::string("stage1."), &extra1}, std::pair{std::string("stage2."), &extra2}}) {
      if (key.rfind(prefix, 0) == 0 && key != prefix + "config" && key != prefix + "overrides") target = list;
    }
    target->push_back(target == &own ? o : o.substr(std::string("stageN.").size()));
  }
  RecipeConfig r;
  core::loadConfigFile(r, path, own);
  r.stage1.overrides.insert(r.stage1.overrides.end(), extra1.begin(), extra1.end());
  r.stage2.overrides.insert(r.stage2.overrides.end(), extra2.begin(), extra2.end());
  const auto base = fs::path(path).parent_path();
  for (auto* stage : {&r.stage1, &r.stage2}) {
    if (fs::path(stage->config).is_relative()) stage->config = (base / stage->config).lexically_normal().string();
    if (!fs::is_regular_file(stage->config)) {
      throw core::ConfigError(path + ": stage config " + stage->config +
                              " does not exist (stage paths are relative to the recipe file)");
    }
  }
  if (r.name.empty()) r.name = fs::path(path).stem().string();
  // Both stages see one data file and one hold-out: the prior's test cells must never reach the
  // autoencoder either. Where the recipe leaves them to the stage configs, the prior's win.
  const auto s2 = resolvedStage2(r);
  if (r.data.holdout.empty()) r.data.holdout = s2.data.holdout;
  if (r.data.path.empty()) r.data.path = s2.data.path.empty() ? resolvedStage1(r).data.path : s2.data.path;
  if (r.data.holdout.empty()) {
    throw core::ConfigError(path + ": no held-out cells to generate and evaluate; pass --split 'col=v1,v2' "
                            "(or set data.holdout in the recipe)");
  }
  if (!fs::is_regular_file(r.data.path)) {
    throw core::ConfigError("data file " + r.data.path + " does not exist; pass --data FILE.h5ad");
  }
  // Everything each stage will be given, checked now rather than after an hour of stage 1.
  (void)resolvedStage1(r);
  (void)resolvedStage2(r);
  return r;
}

int runRecipe(const RecipeConfig& r, const std::string& executable) {
  fs::create_directories(fs::path(r.run_dir) / "stages");
  const auto pinned = runPath(r, "recipe.yaml");
  const auto resolved = core::dumpConfig(r);
  if (fs::exists(pinned)) {
    const auto before = readFile(pinned);
    if (before != resolved) {
      throw core::ConfigError(r.run_dir + " holds a run of a different recipe (recipe.yaml, " +
                              firstDifference(before, resolved) +
                              "); pass another --run-dir, or delete the directory to start over");
    }
  } else {
    writeFileAtomically(pinned, resolved);
  }

  const auto s2 = resolvedStage2(r);
  const auto& data_path = r.data.path;
  std::string context = r.evaluate.context_column;
  if (context.empty()) {
    for (const auto& c : s2.data.conditions)
      if (c != s2.data.perturbation_column) {
        context = c;
        break;
      }
  }
  const auto seed = std::to_string(r.seed);
  auto train = [&](const std::string& config, const std::vector<std::string>& overrides, const std::string& dir) {
    std::vector<std::string> argv{"train", config};
    argv.insert(argv.end(), overrides.begin(), overrides.end());
    if (fs::exists(fs::path(dir) / "checkpoints" / "latest")) argv.insert(argv.end(), {"--resume", dir});
    if (r.nproc_per_node > 1) argv.insert(argv.end(), {"--nproc-per-node", std::to_string(r.nproc_per_node)});
    return argv;
  };
  auto evaluate = [&](const std::string& pred, const std::string& real, const std::string& out) {
    return std::vector<std::string>{"evaluate", "--pred", pred, "--real", real, "--pert-col",
                                    s2.data.perturbation_column, "--control-pert", s2.data.control,
                                    "--profile", r.evaluate.profile, "--outdir", out};
  };
  const auto pred = runPath(r, "generate/pred.h5ad"), real = runPath(r, "generate/real.h5ad");

  // Built lazily: a finished stage's command may refer to checkpoints that a skipped stage made.
  std::vector<std::pair<std::string, std::function<Stage()>>> stages;
  stages.emplace_back("autoencoder", [&] {
    return Stage{"autoencoder", {train(r.stage1.config, stage1Overrides(r), runPath(r, "autoencoder"))}};
  });
  stages.emplace_back("encode", [&] {
    return Stage{"encode",
                 {{"encode", "--run", runPath(r, "autoencoder"), "--data", data_path, "--out",
                   runPath(r, "latents.safetensors")}}};
  });
  stages.emplace_back("prior", [&] {
    return Stage{"prior", {train(r.stage2.config, stage2Overrides(r), runPath(r, "prior"))}};
  });
  stages.emplace_back("generate", [&] {
    std::vector<std::string> g{"generate", "--prior", runPath(r, "prior"), "--like", data_path, "--cells", "test",
                               "--predict", r.generate.predict, "--controls", r.generate.controls, "--seed", seed,
                               "--out", pred, "--real-out", real};
    if (r.generate.guidance >= 0) g.insert(g.end(), {"--guidance", fmt::format("{}", r.generate.guidance)});
    if (r.generate.steps > 0) g.insert(g.end(), {"--steps", std::to_string(r.generate.steps)});
    fs::create_directories(runPath(r, "generate"));
    return Stage{"generate", {g}};
  });
  stages.emplace_back("evaluate", [&] { return Stage{"evaluate", {evaluate(pred, real, runPath(r, "eval"))}}; });
  for (const auto& kind : r.baselines) {
    stages.emplace_back("baseline-" + kind, [&, kind] {
      const auto out = runPath(r, "baselines/" + kind + ".h5ad");
      std::vector<std::string> b{"baseline", "--kind", kind, "--train", data_path, "--train-split", runPath(r, "prior"),
                                 "--like", real, "--out", out, "--pert-col", s2.data.perturbation_column,
                                 "--control-pert", s2.data.control};
      if (!context.empty()) b.insert(b.end(), {"--celltype-col", context});
      fs::create_directories(runPath(r, "baselines"));
      return Stage{"baseline-" + kind, {b, evaluate(out, real, runPath(r, "baselines/" + kind))}};
    });
  }

  bool rerun = false;  // once a stage runs, the stages after it consume new outputs and run again too
  for (const auto& [name, make] : stages) {
    const auto marker = runPath(r, "stages/" + name + ".done");
    if (fs::exists(marker) && !rerun) {
      core::logInfo("stage {}: finished before, skipped ({})", name, marker);
      continue;
    }
    fs::remove(marker);
    rerun = true;
    const auto stage = make();
    std::string record;
    for (const auto& command : stage.commands) {
      std::vector<std::string> argv{executable};
      argv.insert(argv.end(), command.begin(), command.end());
      core::logInfo("stage {}: latentcell {}", name, joined(command));
      const int rc = runProcess(argv);
      if (rc != 0) {
        core::log(core::LogLevel::Error,
                  "stage {} failed (exit code {}); fix the cause and run the same `latentcell run` again: finished "
                  "stages are skipped and an interrupted training continues from its latest checkpoint",
                  name, rc);
        return rc;
      }
      record += "latentcell " + joined(command) + "\n";
    }
    writeFileAtomically(marker, "finished: " + now() + "\n" + record);
  }
  core::logInfo("recipe {} done in {}: prior metrics in {}, baselines in {}; `latentcell report {}` compares them",
                r.name, r.run_dir, runPath(r, "eval"), runPath(r, "baselines"), r.run_dir);
  return 0;
}

}  // namespace latentcell::train
