// The training engine: schedules, EMA, gradient accumulation equal to one larger batch, atomic
// checkpoints (a failed write leaves the previous one and `latest`), exact resume in-process and
// after SIGKILL of the binary, non-finite losses skipped up to a limit, validation with the best-K
// checkpoints kept, the epoch limit, run metadata (git commit, command line) and bf16 autocast on CPU.
#include "TestUtil.h"
#include "core/Autocast.h"
#include "core/BuildInfo.h"
#include "core/Safetensors.h"
#include "train/Checkpoint.h"
#include "train/Communicator.h"
#include "train/Ema.h"
#include "train/LrSchedule.h"
#include "train/TensorBoardWriter.h"
#include "train/Trainer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace latentcell::train;
using latentcell::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Linear regression on a fixed pool of examples; batch i takes rows [i*b, (i+1)*b) modulo the pool,
// so an epoch (one pass over the pool, counted in the data position) is 256 / (b * world) batches.
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
  DataState dataState() const override { return {{"batch", next_}, {kEpochKey, next_ * batch_ * world_ / 256}}; }
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

// A validation "score" that goes up and down with the step (as a real validation metric does), beside
// the loss; each validation also keeps a copy of the weights it saw, to compare with the checkpoints.
double scoreAt(int64_t step) { return std::sin(1.7 * static_cast<double>(step)) + 0.01 * static_cast<double>(step); }

class ScoredTask : public LinearTask {
 public:
  ScoredTask() : LinearTask(8) {}
  LossTerms evalLoss() override {
    const int64_t step = dataState().at("batch");  // one batch per step
    seen[step] = model_->weight.detach().clone();
    auto terms = LinearTask::evalLoss();
    terms.terms.emplace_back("score", torch::tensor(scoreAt(step), torch::kDouble));
    return terms;
  }
  std::map<int64_t, torch::Tensor> seen;  // step -> weights at that validation
};

// A float model that records the dtype its linear layer computed in.
class DtypeProbeTask : public Trainable {
 public:
  DtypeProbeTask() {
    torch::manual_seed(3);
    x_ = torch::randn({64, 16});
    y_ = x_.matmul(torch::randn({16, 1}));
    model_ = torch::nn::Linear(16, 1);
  }
  torch::nn::Module& module() override { return *model_; }
  int64_t batchSize() const override { return 64; }
  DataState dataState() const override { return {}; }
  void restoreDataState(const DataState&) override {}
  LossTerms trainLoss() override {
    auto pred = model_(x_);  // [64, 1]
    dtype = pred.scalar_type();
    return {{{"loss", torch::mse_loss(pred.to(torch::kFloat), y_)}}};
  }
  torch::nn::Linear model_{nullptr};
  c10::ScalarType dtype = c10::ScalarType::Undefined;

 private:
  torch::Tensor x_, y_;
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

// The stdout of a shell command, without the trailing newline ("" when it fails).
std::string capture(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) out.append(buffer, n);
  if (pclose(pipe) != 0) return "";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string quoted(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += "'" + a + "' ";
  return out;
}

// Train-split losses of a run's metrics.jsonl by step.
std::map<int64_t, double> trainLosses(const std::string& run_dir) {
  std::map<int64_t, double> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record["split"] == "train") out[record["step"].get<int64_t>()] = record["loss"].get<double>();
  }
  return out;
}

const c10::Device kCpu(c10::kCPU);

// The binaries these tests start run on one intra-op thread: on a loaded two-core machine OpenMP's
// spinning threads made a 120-step smoke run take 56 s instead of 3 s. The results do not depend on it.
void oneThreadPerChild() { setenv("OMP_NUM_THREADS", "1", 1); }

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
  oneThreadPerChild();
  TempDir dir;
  const std::string bin = LATENTCELL_BINARY;
  const std::string config = latentcell::test::sourcePath("configs/smoke.yaml");
  const std::string common = " device=cpu trainer.max_steps=200 trainer.checkpoint_every=25 trainer.log_every=40"
                             " trainer.ema.enabled=true --log-level warn";
  const auto full = dir.file("full"), killed = dir.file("killed");
  ASSERT_EQ(std::system(("'" + bin + "' train '" + config + "' run_dir='" + full + "'" + common).c_str()), 0);

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(bin.c_str(), bin.c_str(), "--log-level", "warn", "train", config.c_str(), ("run_dir=" + killed).c_str(),
          "device=cpu", "trainer.max_steps=200", "trainer.checkpoint_every=25", "trainer.log_every=40",
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
  const auto a = latentcell::core::loadSafetensors(full + "/checkpoints/step-00000200/model.safetensors");
  const auto b = latentcell::core::loadSafetensors(killed + "/checkpoints/step-00000200/model.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.tensors[i].second, b.tensors[i].second)) << a.tensors[i].first;
  }
  EXPECT_EQ(readFile(full + "/checkpoints/step-00000200/ema.safetensors"),
            readFile(killed + "/checkpoints/step-00000200/ema.safetensors"));
}

// SIGKILL half-way through writing a checkpoint: the previous checkpoint stays loadable, `latest`
// still points at it, and the run resumes from it.
TEST(Trainer, SigkillDuringCheckpointWriteKeepsPreviousCheckpoint) {
  oneThreadPerChild();
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
  std::vector<TrainSummary> summaries = {{}, {}};
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
        run.summaries[r] = t.fit();
        run.skipped[r] = run.summaries[r].nonfinite_skipped;
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
  TempDir single_dir;
  auto config = sgdConfig(12);
  config.optimizer.name = "adamw";
  LinearTask single(16);
  Trainer(config, single, c10::Device(c10::kCPU), single_dir.path().string(), "cfg").fit();
  EXPECT_FALSE(torch::equal(single.model_->weight, LinearTask(16).model_->weight));  // it trained
  // Gradients all-reduced from the backward hooks (a bucket per parameter) and after backward.
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "overlapped with backward" : "after backward");
    TempDir dp_dir;
    auto dp = config;
    dp.distributed.overlap = overlap;
    dp.distributed.bucket_mb = 1e-5;
    auto run = runTwoRanks(dp, -1, dp_dir);
    EXPECT_EQ(run.skipped, (std::vector<int64_t>{0, 0}));
    EXPECT_TRUE(torch::equal(run.tasks[0]->model_->weight, run.tasks[1]->model_->weight));
    EXPECT_TRUE(torch::equal(run.tasks[0]->model_->bias, run.tasks[1]->model_->bias));
    EXPECT_LE((run.tasks[0]->model_->weight - single.model_->weight).abs().max().item<double>(), 1e-6);
    EXPECT_LE((run.tasks[0]->model_->bias - single.model_->bias).abs().max().item<double>(), 1e-6);
    EXPECT_TRUE(fs::exists(dp_dir.file("rank0/checkpoints/latest")));
    EXPECT_FALSE(fs::exists(dp_dir.file("rank1/checkpoints/latest")));
    EXPECT_FALSE(fs::exists(dp_dir.file("rank1/metrics.jsonl")));
  }
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

// Validation every 3 steps ranks the checkpoints by "score" (either direction); the 3 best survive
// keep_last = 2 pruning, best.yaml lists them best first with their values, `best` points at the
// first, and each holds the weights of its step. A run stopped and resumed ranks the same.
TEST(Trainer, BestCheckpointsSurvivePruningAndAreTheBest) {
  for (const std::string mode : {"max", "min"}) {
    SCOPED_TRACE("eval_mode " + mode);
    auto config = sgdConfig(30);
    config.eval_every = 3;
    config.eval_metric = "score";
    config.eval_mode = mode;
    config.keep_best = 3;
    config.keep_last = 2;
    config.checkpoint_every = 5;
    TempDir dir;
    ScoredTask task;
    const auto summary = Trainer(config, task, kCpu, dir.path().string(), "").fit();

    std::vector<int64_t> expected;  // validated steps, best first; ties keep the earlier step
    for (int64_t step = 3; step <= 30; step += 3) expected.push_back(step);
    std::stable_sort(expected.begin(), expected.end(), [&](int64_t a, int64_t b) {
      return mode == "max" ? scoreAt(a) > scoreAt(b) : scoreAt(a) < scoreAt(b);
    });
    expected.resize(3);

    CheckpointManager m(dir.path().string(), 2);
    const auto best = m.readBest();
    EXPECT_EQ(best.metric, "score");
    EXPECT_EQ(best.mode, mode);
    ASSERT_EQ(best.ranked.size(), 3u);
    ASSERT_EQ(summary.best.ranked.size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(best.ranked[k].step, expected[k]);
      EXPECT_EQ(summary.best.ranked[k].step, expected[k]);
      EXPECT_DOUBLE_EQ(best.ranked[k].value, scoreAt(expected[k]));
      const auto ckpt = m.directory() + "/" + CheckpointManager::name(expected[k]);
      ASSERT_TRUE(fs::is_directory(ckpt)) << ckpt << " was pruned";
      const auto weights = latentcell::core::loadSafetensors(ckpt + "/model.safetensors");
      EXPECT_TRUE(torch::equal(weights.at("weight"), task.seen.at(expected[k]))) << ckpt;
    }
    ASSERT_TRUE(m.best());
    EXPECT_EQ(*m.best(), m.directory() + "/" + CheckpointManager::name(expected[0]));
    EXPECT_TRUE(m.latest()->ends_with("step-00000030"));
    // Pruned: checkpoints neither among the best nor among the last two.
    EXPECT_LE(m.list().size(), 5u);
    EXPECT_FALSE(fs::exists(m.directory() + "/step-00000005"));
    EXPECT_FALSE(fs::exists(m.directory() + "/step-00000010"));

    // Stopped after step 16 and resumed: the same ranking at the end.
    TempDir resumed_dir;
    {
      auto first = config;
      first.max_steps = 16;
      ScoredTask part;
      Trainer(first, part, kCpu, resumed_dir.path().string(), "").fit();
    }
    ScoredTask rest;
    Trainer resumed(config, rest, kCpu, resumed_dir.path().string(), "");
    ASSERT_TRUE(resumed.resume());
    resumed.fit();
    const auto again = CheckpointManager(resumed_dir.path().string(), 2).readBest();
    ASSERT_EQ(again.ranked.size(), 3u);
    for (size_t k = 0; k < 3; ++k) EXPECT_EQ(again.ranked[k].step, expected[k]);
  }
}

TEST(Trainer, UnknownEvalMetricIsNamed) {
  TempDir dir;
  auto config = sgdConfig(4);
  config.eval_every = 2;
  config.eval_metric = "accuracy";
  ScoredTask task;
  const auto error = latentcell::test::errorOf([&] { Trainer(config, task, kCpu, dir.path().string(), "").fit(); });
  EXPECT_NE(error.find("trainer.eval_metric = 'accuracy' is not a validation term"), std::string::npos) << error;
  EXPECT_NE(error.find("loss, score"), std::string::npos) << error;
}

// 256 examples in batches of 8 make an epoch of 32 steps: max_epochs = 2 stops at step 64, before
// max_steps; with 3 micro-batches a step the limit falls inside step 22 (batches 63 to 65).
TEST(Trainer, StopsAtTheEpochLimit) {
  auto config = sgdConfig(1000);
  config.max_epochs = 2;
  config.log_every = 10;
  {
    TempDir dir;
    LinearTask task(8);
    const auto summary = Trainer(config, task, kCpu, dir.path().string(), "").fit();
    EXPECT_EQ(summary.stopped_by, "max_epochs");
    EXPECT_EQ(summary.steps, 64);
    EXPECT_EQ(task.dataState().at(kEpochKey), 2);
    EXPECT_TRUE(CheckpointManager(dir.path().string(), 3).latest()->ends_with("step-00000064"));
    std::ifstream jsonl(dir.file("metrics.jsonl"));
    std::map<int64_t, int64_t> epochs;
    for (std::string line; std::getline(jsonl, line);) {
      const auto record = nlohmann::json::parse(line);
      epochs[record["step"].get<int64_t>()] = record["epoch"].get<int64_t>();
    }
    EXPECT_EQ(epochs.at(30), 0);
    EXPECT_EQ(epochs.at(40), 1);
    EXPECT_EQ(epochs.at(64), 2);
    // Resumed at the limit: nothing more to do.
    LinearTask again(8);
    Trainer resumed(config, again, kCpu, dir.path().string(), "");
    ASSERT_TRUE(resumed.resume());
    EXPECT_EQ(resumed.fit().steps, 64);
  }
  {
    TempDir dir;
    auto accumulated = config;
    accumulated.accumulate = 3;
    LinearTask task(8);
    EXPECT_EQ(Trainer(accumulated, task, kCpu, dir.path().string(), "").fit().steps, 22);
  }
  {
    TempDir dir;
    auto short_run = config;
    short_run.max_steps = 10;
    LinearTask task(8);
    const auto summary = Trainer(short_run, task, kCpu, dir.path().string(), "").fit();
    EXPECT_EQ(summary.steps, 10);
    EXPECT_EQ(summary.stopped_by, "max_steps");
  }
  TempDir dir;
  DtypeProbeTask no_epochs;
  const auto error = latentcell::test::errorOf([&] { Trainer(config, no_epochs, kCpu, dir.path().string(), "").fit(); });
  EXPECT_NE(error.find("this model's data has no epochs"), std::string::npos) << error;
}

// meta.yaml of a checkpoint written by the binary: the exact argv, the git commit of the sources
// (a commit git knows in the source directory's history; the exact value is checked on a scratch
// repository below) and the versions.
TEST(Trainer, CheckpointMetadataNamesTheCommitAndCommandLine) {
  oneThreadPerChild();
  TempDir dir;
  const std::string run = dir.file("run");
  const std::vector<std::string> argv = {LATENTCELL_BINARY,         "train",
                                         latentcell::test::sourcePath("configs/smoke.yaml"),
                                         "run_dir=" + run,          "device=cpu",
                                         "trainer.max_steps=2",     "trainer.log_every=1",
                                         "--log-level",             "warn"};
  ASSERT_EQ(std::system(quoted(argv).c_str()), 0);
  const auto meta = YAML::LoadFile(run + "/checkpoints/step-00000002/meta.yaml");
  EXPECT_EQ(meta["command_line"].as<std::vector<std::string>>(), argv);
  const auto info = latentcell::core::buildInfo();
  EXPECT_EQ(meta["latentcell"].as<std::string>(), info.latentcell_version);
  EXPECT_EQ(meta["world_size"].as<int>(), 1);
  EXPECT_EQ(meta["device"].as<std::string>(), "cpu");
  const std::string source = LATENTCELL_SOURCE_DIR;
  const std::string top = capture("git -C '" + source + "' rev-parse --show-toplevel 2>/dev/null");
  const bool checkout = !top.empty() && fs::equivalent(top, source);
  const std::string commit = meta["git_commit"].as<std::string>();
  if (checkout) {
    // HEAD when built from it; an ancestor of HEAD when commits came after the build.
    EXPECT_EQ(commit.size(), 40u) << commit;
    EXPECT_EQ(std::system(("git -C '" + source + "' merge-base --is-ancestor " + commit + " HEAD").c_str()), 0)
        << commit << " is not a commit of HEAD's history";
  } else {
    EXPECT_EQ(commit, "unknown");
  }
  EXPECT_EQ(meta["git_dirty"].as<bool>(), info.git_dirty);
}

// cmake/GitInfo.cmake, which the build runs: a commit and a clean flag in a fresh repository, dirty
// once a tracked file changes, "unknown" outside a checkout and in a subdirectory of one.
TEST(BuildInfo, GitInfoScriptReadsCommitAndDirtyFlag) {
  if (std::system("git --version > /dev/null 2>&1") != 0 || std::system("cmake --version > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "needs git and cmake on PATH";
  }
  TempDir dir;
  const auto header = dir.file("GitInfo.h");
  const auto generate = [&](const std::string& source) {
    const std::string cmd = "cmake -DSOURCE_DIR='" + source + "' -DOUTPUT='" + header + "' -P '" +
                            latentcell::test::sourcePath("cmake/GitInfo.cmake") + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return readFile(header);
  };
  const auto plain = dir.file("plain");
  fs::create_directories(plain);
  auto h = generate(plain);
  EXPECT_NE(h.find("kGitCommit = \"unknown\""), std::string::npos) << h;
  EXPECT_NE(h.find("kGitDirty = false"), std::string::npos) << h;

  const auto repo = dir.file("repo");
  fs::create_directories(repo + "/sub");
  std::ofstream(repo + "/a.txt") << "one\n";
  const std::string git = "git -C '" + repo + "' -c user.name=test -c user.email=test@example.com ";
  ASSERT_EQ(std::system((git + "init -q && " + git + "add a.txt && " + git + "commit -q -m first").c_str()), 0);
  const auto head = capture(git + "rev-parse HEAD");
  ASSERT_EQ(head.size(), 40u);
  h = generate(repo);
  EXPECT_NE(h.find("kGitCommit = \"" + head + "\""), std::string::npos) << h;
  EXPECT_NE(h.find("kGitDirty = false"), std::string::npos) << h;
  std::ofstream(repo + "/a.txt") << "two\n";
  EXPECT_NE(generate(repo).find("kGitDirty = true"), std::string::npos);
  EXPECT_NE(generate(repo + "/sub").find("kGitCommit = \"unknown\""), std::string::npos);
}

// The CPU bf16 check agrees with the kernel's view of the processor flags.
TEST(Autocast, CpuBf16DetectionAgreesWithProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo on this system";
  bool flag = false, seen = false;
  for (std::string line; std::getline(in, line) && !seen;) {
    const bool x86 = line.rfind("flags", 0) == 0, arm = line.rfind("Features", 0) == 0;
    if (!x86 && !arm) continue;
    seen = true;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) flag = flag || w == "avx512_bf16" || w == "amx_bf16" || (arm && w == "bf16");
  }
  if (!seen) GTEST_SKIP() << "/proc/cpuinfo lists no CPU flags";
  EXPECT_EQ(latentcell::core::cpuHasBf16(), flag);
}

// Inside the guard a CPU matmul computes in bf16 (close to, not equal to, fp32); a nested disabled
// guard computes in fp32 again; the state is restored when the scopes end.
TEST(Autocast, GuardComputesInBf16OnCpu) {
  torch::manual_seed(0);
  const auto a = torch::randn({16, 32}), b = torch::randn({32, 8});
  const auto reference = a.matmul(b);  // [16, 8]
  EXPECT_EQ(reference.scalar_type(), torch::kFloat);
  {
    latentcell::core::AutocastGuard bf16(c10::kCPU, true);
    const auto low = a.matmul(b);  // [16, 8]
    EXPECT_EQ(low.scalar_type(), torch::kBFloat16);
    EXPECT_FALSE(torch::equal(low.to(torch::kFloat), reference));
    EXPECT_TRUE(torch::allclose(low.to(torch::kFloat), reference, 2e-2, 0.2));
    {
      latentcell::core::AutocastGuard off(c10::kCPU, false);
      EXPECT_EQ(a.matmul(b).scalar_type(), torch::kFloat);
    }
    EXPECT_EQ(a.matmul(b).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(a.matmul(b).scalar_type(), torch::kFloat);
}

// trainer.bf16 on a CPU with bf16 units: the model computes in bf16 inside the trainer's autocast
// region while its weights stay fp32, and training still works, both for a linear model and for the
// smoke model through the binary. A CPU without bf16 arithmetic refuses the option.
TEST(Trainer, Bf16AutocastOnCpuTrains) {
  auto config = sgdConfig(30);
  config.optimizer.lr = 0.2;
  config.log_every = 10;
  config.bf16 = true;
  TempDir dir;
  DtypeProbeTask task;
  if (!latentcell::core::cpuHasBf16()) {
    const auto error = latentcell::test::errorOf([&] { Trainer(config, task, kCpu, dir.path().string(), ""); });
    EXPECT_NE(error.find("no bf16 arithmetic"), std::string::npos) << error;
    GTEST_SKIP() << "this CPU has no bf16 arithmetic (avx512_bf16, amx_bf16): bf16 on CPU is refused, as checked";
  }
  const auto summary = Trainer(config, task, kCpu, dir.path().string(), "").fit();
  EXPECT_EQ(task.dtype, torch::kBFloat16);
  EXPECT_EQ(task.model_->weight.scalar_type(), torch::kFloat);
  EXPECT_LT(summary.last_loss, 0.5 * summary.first_loss) << summary.first_loss << " -> " << summary.last_loss;
  DtypeProbeTask fp32_task;
  config.bf16 = false;
  TempDir fp32_dir;
  Trainer(config, fp32_task, kCpu, fp32_dir.path().string(), "").fit();
  EXPECT_EQ(fp32_task.dtype, torch::kFloat);

  oneThreadPerChild();
  const auto run = dir.file("smoke");
  const std::vector<std::string> argv = {LATENTCELL_BINARY, "train", latentcell::test::sourcePath("configs/smoke.yaml"),
                                         "run_dir=" + run,  "device=cpu", "trainer.bf16=true", "trainer.max_steps=100",
                                         "trainer.log_every=10", "--log-level", "warn"};
  ASSERT_EQ(std::system(quoted(argv).c_str()), 0);
  const auto losses = trainLosses(run);
  ASSERT_EQ(losses.size(), 10u);
  EXPECT_LT(losses.at(100), 0.5 * losses.at(10)) << losses.at(10) << " -> " << losses.at(100);
}

// The wall-time limit with two ranks: rank 0's clock decides at logging steps, so both ranks stop
// after the same step (here the first logging step, the limit being over at once) and stay equal.
TEST(Trainer, WallTimeLimitStopsAllRanksAtTheSameStep) {
  TempDir dir;
  auto config = sgdConfig(100);
  config.max_time_s = 1e-9;
  config.log_every = 4;
  auto run = runTwoRanks(config, -1, dir);
  for (const auto& summary : run.summaries) {
    EXPECT_EQ(summary.steps, 4);
    EXPECT_EQ(summary.stopped_by, "max_time_s");
  }
  EXPECT_TRUE(torch::equal(run.tasks[0]->model_->weight, run.tasks[1]->model_->weight));
  TempDir single;
  LinearTask task(8);
  EXPECT_EQ(Trainer(config, task, kCpu, single.path().string(), "").fit().steps, 1);  // one process: every step
}
