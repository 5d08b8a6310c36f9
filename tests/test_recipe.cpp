// `latentcell run` as a user runs it: a tiny scLDM-shaped recipe on a simulated screen through every
// stage into one run directory; a second run skips every finished stage and changes nothing; a stage
// run again also reruns the stages after it; an interrupted training continues from its checkpoint;
// the baselines learn from exactly the prior's training cells (against a subset written by anndata);
// and the input errors: a changed recipe in the same directory, missing data or split, a bad stage
// key (before any stage runs), a stage that fails.
#include "TestUtil.h"

#include "data/H5ad.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace latentcell {
namespace {

namespace fs = std::filesystem;
using test::runBinary;
using test::TempDir;

const char* kStages[] = {"autoencoder", "encode", "prior", "generate", "evaluate",
                         "baseline-perturb-mean", "baseline-context-mean", "baseline-cell-mean"};
const std::string kSplit = "batch=batch_1; perturbation=pert_1";

// A recipe over the shipped CPU configs, shrunk to seconds: the overrides a user would pass.
std::string writeRecipe(const TempDir& dir, const std::string& name, int64_t prior_steps = 12) {
  const auto path = dir.file(name + ".yaml");
  std::ofstream(path) << "task: recipe\nname: tiny\nseed: 0\n"
                      << "stage1:\n  config: " << test::sourcePath("configs/stage1/scldm-vae-cpu.yaml") << "\n"
                      << "  overrides: [device=cpu, data.batch_size=64, model.mcab.width=16, model.mcab.heads=2,"
                      << " model.mcab.latent_tokens=4, model.mcab.latent_dim=3, trainer.max_steps=30,"
                      << " trainer.eval_every=0, trainer.log_every=10]\n"
                      << "stage2:\n  config: " << test::sourcePath("configs/stage2/scldm-flow-cpu.yaml") << "\n"
                      << "  overrides: [device=cpu, 'data.conditions=[perturbation, batch]', data.control=control,"
                      << " data.exclude_column='', 'data.exclude_values=[]', data.batch_size=32,"
                      << " prior.backbone.dim=32, prior.backbone.depth=2, prior.backbone.heads=2, prior.flow.steps=4,"
                      << " trainer.max_steps=" << prior_steps << ", trainer.eval_every=0, trainer.log_every=4,"
                      << " trainer.checkpoint_every=6]\n";
  return path;
}

struct Fixture {
  TempDir dir;
  std::string data, recipe, run, command, first_output;
};

const Fixture& fixture() {
  static Fixture* f = [] {
    auto* f = new Fixture;
    f->data = f->dir.file("screen.h5ad");
    auto r = runBinary("simulate --out '" + f->data + "' --cells 600 --genes 30 --perturbations 4 --seed 3");
    EXPECT_EQ(r.status, 0) << r.out;
    f->recipe = writeRecipe(f->dir, "tiny");
    f->run = f->dir.file("run");
    f->command = "run '" + f->recipe + "' --data '" + f->data + "' --split '" + kSplit + "' --run-dir '" + f->run + "'";
    r = runBinary(f->command);
    EXPECT_EQ(r.status, 0) << r.out;
    f->first_output = r.out;
    return f;
  }();
  return *f;
}

TEST(Recipe, RunsEveryStageIntoOneRunDirectory) {
  const auto& f = fixture();
  for (const char* stage : kStages) {
    EXPECT_TRUE(fs::exists(f.run + "/stages/" + stage + ".done")) << stage;
    EXPECT_NE(f.first_output.find(std::string("stage ") + stage + ": latentcell"), std::string::npos) << stage;
  }
  EXPECT_TRUE(fs::exists(f.run + "/autoencoder/checkpoints/latest"));
  EXPECT_TRUE(fs::exists(f.run + "/latents.safetensors"));
  EXPECT_TRUE(fs::exists(f.run + "/prior/checkpoints/latest"));
  for (const char* dir : {"/eval", "/baselines/perturb-mean", "/baselines/context-mean", "/baselines/cell-mean"}) {
    EXPECT_TRUE(fs::exists(f.run + dir + "/agg_results.csv")) << dir;
    EXPECT_TRUE(fs::exists(f.run + dir + "/distribution.csv")) << dir;
  }
  // The held-out cells were generated, and the split reached both stages.
  const auto pred = data::readH5ad(f.run + "/generate/pred.h5ad");
  const auto real = data::readH5ad(f.run + "/generate/real.h5ad");
  EXPECT_EQ(pred.obs.index, real.obs.index);
  bool held_out = false;
  for (int64_t i = 0; i < pred.n_obs(); ++i) held_out |= pred.obsColumn("perturbation").text(i) == "pert_1";
  EXPECT_TRUE(held_out);
  for (const char* stage : {"autoencoder", "prior"}) {
    std::ifstream config(f.run + "/" + stage + "/config.yaml");
    const std::string text((std::istreambuf_iterator<char>(config)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find(kSplit), std::string::npos) << stage << " was not given the split";
  }
}

TEST(Recipe, ASecondRunSkipsFinishedStagesAndAStageRunAgainRerunsTheOnesAfterIt) {
  const auto& f = fixture();
  const auto pred = f.run + "/generate/pred.h5ad";
  const auto before = fs::last_write_time(pred);
  auto r = runBinary(f.command);
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* stage : kStages) {
    EXPECT_NE(r.out.find(std::string("stage ") + stage + ": finished before, skipped"), std::string::npos) << stage;
  }
  EXPECT_EQ(fs::last_write_time(pred), before);

  // Generation redone (e.g. after a crash): the evaluation and baselines use the new cells, the
  // trained stages stay.
  fs::remove(f.run + "/stages/generate.done");
  r = runBinary(f.command);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("stage prior: finished before, skipped"), std::string::npos);
  for (const char* stage : {"generate", "evaluate", "baseline-cell-mean"}) {
    EXPECT_NE(r.out.find(std::string("stage ") + stage + ": latentcell"), std::string::npos) << stage;
  }
  EXPECT_GT(fs::last_write_time(pred), before);
}

TEST(Recipe, AnInterruptedTrainingContinuesFromItsLatestCheckpoint) {
  const auto& f = fixture();
  TempDir dir;
  const auto run = dir.file("run");
  const auto base = "run '" + f.recipe + "' --data '" + f.data + "' --split '" + kSplit + "' --run-dir '" + run + "'";
  // The prior stage of a 6-step recipe stands in for one that was stopped at its step-6 checkpoint.
  auto r = runBinary(base + " stage2.trainer.max_steps=6 baselines=[]");
  ASSERT_EQ(r.status, 0) << r.out;
  fs::remove(run + "/stages/prior.done");
  // Same recipe with 12 steps is a different recipe: refused, nothing touched.
  r = runBinary(base + " stage2.trainer.max_steps=12 baselines=[]");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("holds a run of a different recipe"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("trainer.max_steps=12"), std::string::npos) << r.out;
  // The same recipe again: the prior resumes from its checkpoint instead of starting over.
  r = runBinary(base + " stage2.trainer.max_steps=6 baselines=[]");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("--resume"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stage autoencoder: finished before, skipped"), std::string::npos) << r.out;
}

TEST(Recipe, BaselinesLearnFromExactlyThePriorsTrainingCells) {
  LATENTCELL_REQUIRE_PYTHON();
  const auto& f = fixture();
  TempDir dir;
  // The training cells, cut by anndata from the split the prior wrote.
  const auto train = dir.file("train.h5ad");
  const auto script = dir.file("cut.py");
  std::ofstream(script) << "import json, sys\nimport anndata as ad\n"
                        << "a = ad.read_h5ad(sys.argv[1])\ns = json.load(open(sys.argv[2]))\n"
                        << "drop = set(s['test']) | set(s['val'])\n"
                        << "a[[i for i in range(a.n_obs) if i not in drop]].copy().write_h5ad(sys.argv[3])\n";
  const std::string cmd = "'" + test::pythonPath() + "' '" + script + "' '" + f.data + "' '" + f.run +
                          "/prior/split.json' '" + train + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const auto out = dir.file("perturb-mean.h5ad");
  auto r = runBinary("baseline --kind perturb-mean --train '" + train + "' --like '" + f.run +
                     "/generate/real.h5ad' --out '" + out + "' --pert-col perturbation --control-pert control"
                     " --celltype-col batch");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto expected = data::readH5ad(out), got = data::readH5ad(f.run + "/baselines/perturb-mean.h5ad");
  EXPECT_EQ(got.obs.index, expected.obs.index);
  EXPECT_EQ(got.X.indptr, expected.X.indptr);
  EXPECT_EQ(got.X.indices, expected.X.indices);
  EXPECT_EQ(got.X.data, expected.X.data);
}

TEST(Recipe, BadInputFailsWithAClearErrorBeforeAnyStageRuns) {
  const auto& f = fixture();
  TempDir dir;
  const auto run = dir.file("run");
  const auto recipe = "run '" + f.recipe + "' --run-dir '" + run + "'";
  auto r = runBinary(recipe + " --data '" + dir.file("missing.h5ad") + "' --split '" + kSplit + "'");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("missing.h5ad does not exist; pass --data"), std::string::npos) << r.out;
  r = runBinary(recipe + " --data '" + f.data + "' 'stage2.data.holdout=[]'");  // the config's own split removed
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("no held-out cells to generate and evaluate; pass --split"), std::string::npos) << r.out;
  r = runBinary(recipe + " --data '" + f.data + "' --split '" + kSplit + "' stage2.trainer.max_stepz=3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("max_stepz"), std::string::npos) << r.out;
  r = runBinary("run '" + test::sourcePath("configs/stage1/scldm-vae-cpu.yaml") + "'");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("is not a recipe (task: stage1)"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(run)) << "nothing may be written before the recipe is known to be valid";

  // A split that matches no cell fails in the first stage, which the error names.
  const auto failing = dir.file("failing");
  r = runBinary("run '" + f.recipe + "' --run-dir '" + failing + "' --data '" + f.data + "' --split 'batch=batch_9'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("stage autoencoder failed"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(failing + "/stages/autoencoder.done"));
}

}  // namespace
}  // namespace latentcell
