// The training engine: schedules, EMA, gradient accumulation equal to one larger batch, atomic
// checkpoints (a failed write leaves the previous one and `latest`), exact resume in-process and
// after SIGKILL of the binary, and non-finite losses skipped up to a limit.
#include "TestUtil.h"
#include "core/Safetensors.h"
#include "train/Checkpoint.h"
#include "train/Communicator.h"
#include "train/Ema.h"
#include "train/LrSchedule.h"
#include "train/TensorBoardWriter.h"
#include "train/Trainer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace latentcell::train;
using latentcell::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Linear regression on a fixed pool of examples; batch i takes rows [i*b, (i+1)*b) modulo the pool.
class LinearTask : public Trainable {
 public:
  // With `world` ranks, rank r's batch i is global batch i * world + r.
  LinearTask(int64_t batch, std::vector<int64_t> nan_batches = {}, int64_t rank = 0, int64_t world = 1)
      : batch_(batch), nan_batches_(std::move(nan_batches)), rank_(rank), world_(world) {
    torch::manual_seed(99);
    x_ = torch::randn({256, 5}, torch::kDouble);
    y_ = x_.matmul(torch::tensor({1.0, -2.0, 0.5, 3.0, -1.0}, torch::kDouble)).unsqueeze(1) + 0.1;
    torch::manual_seed(5);
    model_ = torch::nn::Linear(5, 1);
    model_->to(torch::kDouble);
  }
  torch::nn::Module& module() override { return *model_; }
  int64_t batchSize() const override { return batch_; }
  DataState dataState() const override { return {{"batch", next_}}; }
  void restoreDataState(const DataState& s) override { next_ = s.at("batch"); }
  LossTerms trainLoss() override {
    const int64_t i = next_++ * world_ + rank_;
    auto idx = (torch::arange(batch_) + i * batch_).remainder(256);
    auto loss = torch::mse_loss(model_(x_.index_select(0, idx)), y_.index_select(0, idx));
    if (std::find(nan_batches_.begin(), nan_batches_.end(), i) != nan_batches_.end()) loss = loss * NAN;
    return {{{"loss", loss}}};
  }
  LossTerms evalLoss() override { return {{{"loss", torch::mse_loss(model_(x_), y_)}}}; }
  torch::nn::Linear model_{nullptr};

 private:
  int64_t batch_;
  std::vector<int64_t> nan_batches_;
  int64_t rank_, world_;
  torch::Tensor x_, y_;
  int64_t next_ = 0;
};

TrainerConfig sgdConfig(int64_t steps) {
  TrainerConfig c;
  c.max_steps = steps;
  c.log_every = 1000;
  c.optimizer.name = "sgd";
  c.optimizer.lr = 0.05;
  c.optimizer.momentum = 0.0;
  c.optimizer.weight_decay = 0.0;
  return c;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST(LrSchedule, WarmupCosineAndWsd) {
  LrSchedule s{"cosine", 1.0, 10, 110, 0.1, 0.2};
  EXPECT_DOUBLE_EQ(s.at(5), 0.5);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_NEAR(s.at(60), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  LrSchedule w{"wsd", 1.0, 0, 100, 0.0, 0.2};
  EXPECT_DOUBLE_EQ(w.at(80), 1.0);
  EXPECT_NEAR(w.at(90), 0.5, 1e-12);
  EXPECT_NEAR(w.at(100), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ((LrSchedule{"constant", 0.3, 0, 10}.at(7)), 0.3);
  EXPECT_THROW(LrSchedule{"triangle"}.at(1), std::invalid_argument);
}

TEST(Ema, FollowsTheFormulaAfterStart) {
  torch::nn::Linear lin(2, 1);
  Ema ema(*lin, 0.9, 1, /*start=*/1);
  torch::NoGradGuard ng;
  lin->weight.fill_(1.0);
  ema.update(1);  // copies
  EXPECT_TRUE(torch::allclose(ema.weights()[0].second, torch::ones({1, 2})));
  lin->weight.fill_(3.0);
  ema.update(2);  // 0.9 * 1 + 0.1 * 3
  EXPECT_TRUE(torch::allclose(ema.weights()[0].second, torch::full({1, 2}, 1.2)));
}

TEST(Trainer, AccumulationEqualsOneLargerBatch) {
  TempDir d1, d2;
  LinearTask small(8), large(32);
  auto c1 = sgdConfig(10);
  c1.accumulate = 4;
  Trainer(c1, small, c10::Device(c10::kCPU), d1.path().string(), "").fit();
  Trainer(sgdConfig(10), large, c10::Device(c10::kCPU), d2.path().string(), "").fit();
  EXPECT_TRUE(torch::allclose(small.model_->weight, large.model_->weight, 1e-10, 1e-12));
  EXPECT_TRUE(torch::allclose(small.model_->bias, large.model_->bias, 1e-10, 1e-12));
  EXPECT_FALSE(torch::allclose(small.model_->weight, LinearTask(8).model_->weight));  // it trained
}

TEST(Trainer, ResumeInProcessIsBitIdentical) {
  TempDir full_dir, part_dir;
  auto config = sgdConfig(20);
  config.optimizer.name = "adamw";
  config.optimizer.weight_decay = 0.01;
  config.ema.enabled = true;
  config.schedule.kind = "cosine";
  config.schedule.warmup_steps = 3;
  LinearTask full(16);
  Trainer(config, full, c10::Device(c10::kCPU), full_dir.path().string(), "").fit();

  auto first = config;
  first.max_steps = 20;
  {
    LinearTask part(16);
    Trainer t(first, part, c10::Device(c10::kCPU), part_dir.path().string(), "");
    for (int i = 0; i < 9; ++i) t.trainStep();
    t.saveCheckpoint();
  }
  LinearTask resumed(16);
  Trainer t(config, resumed, c10::Device(c10::kCPU), part_dir.path().string(), "");
  ASSERT_TRUE(t.resume());
  EXPECT_EQ(t.step(), 9);
  t.fit();
  EXPECT_TRUE(torch::equal(resumed.model_->weight, full.model_->weight));
  EXPECT_TRUE(torch::equal(resumed.model_->bias, full.model_->bias));
}

TEST(Checkpoint, FailedWriteKeepsPreviousCheckpointAndLatest) {
  TempDir dir;
  CheckpointManager m(dir.path().string(), 2);
  const auto good = m.save(10, [](const std::string& d) { std::ofstream(d + "/a") << "10"; });
  EXPECT_THROW(m.save(20, [](const std::string& d) {
    std::ofstream(d + "/a") << "partial";
    throw std::runtime_error("disk full");
  }), std::runtime_error);
  ASSERT_TRUE(m.latest());
  EXPECT_EQ(*m.latest(), good);
  EXPECT_EQ(readFile(good + "/a"), "10");
  // The leftover of the failed write is cleaned up on the next start; keep-last-N prunes.
  CheckpointManager again(dir.path().string(), 2);
  for (int64_t s : {30, 40, 50}) again.save(s, [](const std::string&) {});
  EXPECT_EQ(again.list().size(), 2u);
  EXPECT_TRUE(again.latest()->ends_with("step-00000050"));
  for (const auto& e : fs::directory_iterator(again.directory()))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
}

TEST(Trainer, NonFiniteLossesAreSkippedThenStopTheRun) {
  TempDir dir;
  auto config = sgdConfig(12);
  config.max_nonfinite = 2;
  config.checkpoint_every = 4;
  LinearTask task(8, {2, 5});
  Trainer ok(config, task, c10::Device(c10::kCPU), dir.path().string(), "");
  const auto summary = ok.fit();
  EXPECT_EQ(summary.steps, 12);
  EXPECT_EQ(summary.nonfinite_skipped, 2);

  TempDir dir2;
  LinearTask bad(8, {6, 7, 8});
  Trainer stop(config, bad, c10::Device(c10::kCPU), dir2.path().string(), "");
  try {
    stop.fit();
    FAIL() << "expected the run to stop";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("stopping at step"), std::string::npos) << msg;
    EXPECT_NE(msg.find("step-00000004"), std::string::npos) << msg;  // names the last good checkpoint
  }
  CheckpointManager m(dir2.path().string(), 3);
  ASSERT_TRUE(m.latest());
  EXPECT_TRUE(m.latest()->ends_with("step-00000004"));
  EXPECT_NO_THROW(latentcell::core::loadSafetensors(*m.latest() + "/model.safetensors"));
}

// The binary is killed with SIGKILL once a checkpoint exists, resumed, and must end with weights
// bit-identical to an uninterrupted run.
TEST(Trainer, SigkillThenResumeMatchesUninterruptedRun) {
  TempDir dir;
  const std::string bin = LATENTCELL_BINARY;
  const std::string config = latentcell::test::sourcePath("configs/smoke.yaml");
  const std::string common = " device=cpu trainer.max_steps=400 trainer.checkpoint_every=25 trainer.log_every=100"
                             " trainer.ema.enabled=true --log-level warn";
  const auto full = dir.file("full"), killed = dir.file("killed");
  ASSERT_EQ(std::system(("'" + bin + "' train '" + config + "' run_dir='" + full + "'" + common).c_str()), 0);

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(bin.c_str(), bin.c_str(), "--log-level", "warn", "train", config.c_str(), ("run_dir=" + killed).c_str(),
          "device=cpu", "trainer.max_steps=400", "trainer.checkpoint_every=25", "trainer.log_every=100",
          "trainer.ema.enabled=true", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto latest = fs::path(killed) / "checkpoints" / "step-00000050";
  for (int i = 0; i < 6000 && !fs::exists(latest); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed; make it longer";
  ASSERT_EQ(std::system(("'" + bin + "' train '" + config + "' --resume '" + killed + "'" + common).c_str()), 0);
  const auto a = latentcell::core::loadSafetensors(full + "/checkpoints/step-00000400/model.safetensors");
  const auto b = latentcell::core::loadSafetensors(killed + "/checkpoints/step-00000400/model.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.tensors[i].second, b.tensors[i].second)) << a.tensors[i].first;
  }
  EXPECT_EQ(readFile(full + "/checkpoints/step-00000400/ema.safetensors"),
            readFile(killed + "/checkpoints/step-00000400/ema.safetensors"));
}

// SIGKILL half-way through writing a checkpoint: the previous checkpoint stays loadable, `latest`
// still points at it, and the run resumes from it.
TEST(Trainer, SigkillDuringCheckpointWriteKeepsPreviousCheckpoint) {
  TempDir dir;
  const std::string bin = LATENTCELL_BINARY;
  const std::string config = latentcell::test::sourcePath("configs/smoke.yaml");
  const auto run = dir.file("run");
  const std::string args = " train '" + config + "' run_dir='" + run +
                           "' device=cpu trainer.max_steps=60 trainer.checkpoint_every=20 --log-level warn";
  const int raw = std::system(("LATENTCELL_TEST_KILL_IN_CHECKPOINT=40 '" + bin + "'" + args).c_str());
  ASSERT_TRUE(WIFSIGNALED(raw) || (WIFEXITED(raw) && WEXITSTATUS(raw) == 128 + SIGKILL)) << raw;
  CheckpointManager m(run, 3);
  ASSERT_TRUE(m.latest());
  EXPECT_TRUE(m.latest()->ends_with("step-00000020")) << *m.latest();
  EXPECT_NO_THROW(latentcell::core::loadSafetensors(*m.latest() + "/model.safetensors"));
  ASSERT_EQ(std::system(("'" + bin + "'" + args + " --resume '" + run + "'").c_str()), 0);
  EXPECT_TRUE(m.latest()->ends_with("step-00000060")) << *m.latest();
}

// The metrics of a run parse as JSONL, and its TensorBoard file is read back by tensorboard's own
// event loader with the same values.
TEST(TensorBoard, RunMetricsReadBackByTensorboard) {
  LATENTCELL_REQUIRE_PYTHON();
  TempDir dir;
  auto config = sgdConfig(30);
  config.log_every = 10;
  config.eval_every = 15;
  LinearTask task(8);
  Trainer(config, task, c10::Device(c10::kCPU), dir.path().string(), "").fit();

  std::map<int64_t, double> train_loss;
  std::ifstream jsonl(dir.file("metrics.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(jsonl, line); ++lines) {
    auto record = nlohmann::json::parse(line);  // throws on malformed lines
    if (record["split"] == "train") train_loss[record["step"].get<int64_t>()] = record["loss"].get<double>();
  }
  EXPECT_EQ(lines, 5);  // 3 train + 2 validation records
  ASSERT_EQ(train_loss.size(), 3u);

  std::string event_file;
  for (const auto& e : fs::directory_iterator(dir.file("tensorboard"))) event_file = e.path().string();
  ASSERT_FALSE(event_file.empty());
  const auto out = dir.file("scalars.jsonl");
  ASSERT_EQ(latentcell::test::runPython("tests/python/read_tensorboard.py", "'" + event_file + "' > '" + out + "'"), 0);
  std::ifstream in(out);
  int matched = 0, validations = 0;
  for (std::string line; std::getline(in, line);) {
    auto s = nlohmann::json::parse(line);
    validations += s["tag"] == "val/loss";
    if (s["tag"] == "train/loss") {
      EXPECT_NEAR(s["value"].get<double>(), train_loss.at(s["step"].get<int64_t>()), 1e-6 * (1 + train_loss.at(s["step"].get<int64_t>())));
      ++matched;
    }
  }
  EXPECT_EQ(matched, 3);
  EXPECT_EQ(validations, 2);
}

// Runs `config` on two Gloo ranks (threads over one in-memory store), each on its half of every
// batch; `nan_batch` is a global batch index whose loss is NaN (on rank nan_batch % 2).
struct TwoRankRun {
  std::vector<std::unique_ptr<LinearTask>> tasks;
  std::vector<int64_t> skipped = {-1, -1};
};

TwoRankRun runTwoRanks(const TrainerConfig& config, int64_t nan_batch, const TempDir& dir) {
  TwoRankRun run;
  auto store = c10::make_intrusive<c10d::HashStore>();
  for (int64_t r = 0; r < 2; ++r) run.tasks.push_back(std::make_unique<LinearTask>(8, std::vector<int64_t>{nan_batch}, r, 2));
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      DistributedEnv env;
      env.rank = env.local_rank = r;
      env.world_size = env.local_world_size = 2;
      CommunicatorOptions options;
      options.backend = "gloo";
      options.timeout = std::chrono::seconds(20);
      try {
        auto comm = makeCommunicator(env, options, store);
        Trainer t(config, *run.tasks[r], c10::Device(c10::kCPU), dir.file("rank" + std::to_string(r)), "cfg", comm.get());
        run.skipped[r] = t.fit().nonfinite_skipped;
        comm->barrier();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  return run;
}

// Data parallel through the Trainer: parameters identical on both ranks and within 1e-6 of one
// process on the combined batch; only rank 0 writes the run directory.
TEST(Trainer, TwoGlooRanksEqualOneProcessOnTheCombinedBatch) {
  TempDir single_dir, dp_dir;
  auto config = sgdConfig(12);
  config.optimizer.name = "adamw";
  LinearTask single(16);
  Trainer(config, single, c10::Device(c10::kCPU), single_dir.path().string(), "cfg").fit();
  auto run = runTwoRanks(config, -1, dp_dir);
  EXPECT_EQ(run.skipped, (std::vector<int64_t>{0, 0}));
  EXPECT_TRUE(torch::equal(run.tasks[0]->model_->weight, run.tasks[1]->model_->weight));
  EXPECT_TRUE(torch::equal(run.tasks[0]->model_->bias, run.tasks[1]->model_->bias));
  EXPECT_LE((run.tasks[0]->model_->weight - single.model_->weight).abs().max().item<double>(), 1e-6);
  EXPECT_LE((run.tasks[0]->model_->bias - single.model_->bias).abs().max().item<double>(), 1e-6);
  EXPECT_FALSE(torch::equal(single.model_->weight, LinearTask(16).model_->weight));  // it trained
  EXPECT_TRUE(fs::exists(dp_dir.file("rank0/checkpoints/latest")));
  EXPECT_FALSE(fs::exists(dp_dir.file("rank1/checkpoints/latest")));
  EXPECT_FALSE(fs::exists(dp_dir.file("rank1/metrics.jsonl")));
}

// A NaN loss on one rank only: both ranks skip that step together and stay identical.
TEST(Trainer, NonFiniteLossOnOneRankSkipsTheStepOnAllRanks) {
  TempDir dir;
  auto config = sgdConfig(10);
  config.max_nonfinite = 3;
  auto run = runTwoRanks(config, /*nan_batch=*/7, dir);
  EXPECT_EQ(run.skipped, (std::vector<int64_t>{1, 1}));
  EXPECT_TRUE(torch::equal(run.tasks[0]->model_->weight, run.tasks[1]->model_->weight));
  EXPECT_TRUE(torch::isfinite(run.tasks[0]->model_->weight).all().item<bool>());
}
