// The latentcell binary as a user runs it: --help on every subcommand, `info`, the smoke training
// run, and one-line errors with a non-zero exit for every kind of config mistake.
#include "TestUtil.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <sys/wait.h>

using latentcell::test::TempDir;

namespace {

using Run = latentcell::test::BinaryRun;

Run run(const std::string& args) { return latentcell::test::runBinary(args); }

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// The error line printed by the binary; it must be the only line of output.
void expectOneLineError(const Run& r, int status, const std::vector<std::string>& phrases) {
  EXPECT_EQ(r.status, status) << r.out;
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "more than one line: " << r.out;
  for (const auto& p : phrases) EXPECT_NE(r.out.find(p), std::string::npos) << "missing '" << p << "' in: " << r.out;
}

}  // namespace

TEST(Cli, HelpForEverySubcommand) {
  auto top = run("--help");
  EXPECT_EQ(top.status, 0);
  for (const char* sub : {"info", "train"}) {
    EXPECT_NE(top.out.find(sub), std::string::npos) << sub;
    auto r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.status, 0) << sub;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
  EXPECT_NE(run("").status, 0);  // a subcommand is required
  EXPECT_NE(run("no-such-command").status, 0);
}

TEST(Cli, InfoReportsVersionsAndBackends) {
  auto r = run("info");
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* key : {"latentcell", "torch", "CUDA build      yes", "cuDNN", "NCCL", "gloo", "cpu", "threads"})
    EXPECT_NE(r.out.find(key), std::string::npos) << key << " in\n" << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(torch\s+2\.\d+\.\d+)"))) << r.out;
}

TEST(Cli, SmokeTrainingLowersTheLossAndWritesItsRun) {
  TempDir dir;
  auto r = run("train '" + latentcell::test::sourcePath("configs/smoke.yaml") +
               "' trainer.max_steps=120 trainer.log_every=40 device=cpu run_dir='" + dir.path().string() + "'");
  ASSERT_EQ(r.status, 0) << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(loss ([0-9.]+) -> ([0-9.]+))"))) << r.out;
  EXPECT_LT(std::stod(m[2]), 0.7 * std::stod(m[1])) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir.file("checkpoints/step-00000120/model.safetensors")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("metrics.jsonl")));
  std::ifstream log(dir.file("log.txt"));
  const std::string log_text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(log_text.find("step    120/120"), std::string::npos) << "the run's file log misses the step lines:\n" << log_text;
  // The resolved config reproduces the run's settings, overrides included.
  std::ifstream in(dir.file("config.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("max_steps: 120"), std::string::npos) << text;
  // A second run into the same directory must not overwrite it.
  expectOneLineError(run("train '" + latentcell::test::sourcePath("configs/smoke.yaml") + "' run_dir='" +
                         dir.path().string() + "'"),
                     2, {"already holds checkpoints", "--resume"});
}

TEST(Cli, ConfigErrorsAreOneLineAndNonZero) {
  TempDir dir;
  const auto missing = dir.file("missing.yaml");
  expectOneLineError(run("train '" + missing + "'"), 2, {missing});

  const auto unknown = dir.file("unknown.yaml");
  write(unknown, "task: smoke\ntrainer:\n  optimizer:\n    lrr: 0.1\n");
  expectOneLineError(run("train '" + unknown + "'"), 2, {"trainer.optimizer.lrr", unknown});

  const auto wrong_type = dir.file("wrong_type.yaml");
  write(wrong_type, "trainer:\n  max_steps: many\n");
  expectOneLineError(run("train '" + wrong_type + "'"), 2, {"trainer.max_steps", wrong_type});

  const auto syntax = dir.file("syntax.yaml");
  write(syntax, "trainer: [1, 2\n");
  expectOneLineError(run("train '" + syntax + "'"), 2, {syntax});

  const auto good = latentcell::test::sourcePath("configs/smoke.yaml");
  expectOneLineError(run("train '" + good + "' trainer.max_steps"), 2, {"trainer.max_steps"});
  expectOneLineError(run("train '" + good + "' =3"), 2, {"=3"});
  expectOneLineError(run("train '" + good + "' model.widht=3"), 2, {"model.widht"});
  expectOneLineError(run("train '" + good + "' model.heads=5"), 2, {"model.dim"});
  expectOneLineError(run("train '" + good + "' task=other"), 2, {"task", "smoke"});
}

// --nproc-per-node starts two Gloo ranks of the same command; rank 0 reports and writes the run.
TEST(Cli, TrainWithTwoLocalRanks) {
  TempDir dir;
  auto r = run("train '" + latentcell::test::sourcePath("configs/smoke.yaml") + "' run_dir='" + dir.path().string() +
               "' device=cpu trainer.max_steps=30 trainer.log_every=10 trainer.distributed.timeout_s=60 --nproc-per-node 2");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("[rank 0]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 0 of 2"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("rank 1 of 2"), std::string::npos) << "rank 1 must not log at info level:\n" << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir.file("checkpoints/step-00000030/model.safetensors")));
}
