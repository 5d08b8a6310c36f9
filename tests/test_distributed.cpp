// Data-parallel training: environment parsing (torchrun, SLURM, bad values), gloo collectives with
// ranks as threads, the gradient reducer against a single process on the combined batch (with and
// without overlap hooks), the startup check, lost ranks named within the timeout, the local
// launcher, and the same collectives and training with ranks as processes (the launcher starts this
// binary again with LATENTCELL_TEST_SCENARIO set; DistributedChild.Scenario then plays one rank).
// NCCL runs only where CUDA devices exist.
#include "TestUtil.h"
#include "train/Communicator.h"
#include "train/GradientReducer.h"
#include "train/Launcher.h"

#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <iostream>
#include <thread>

#include <unistd.h>

using namespace latentcell::train;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kShard = 4;  // examples per rank
constexpr int kSteps = 5;

// A small regression net in float64. `extra` enters only rank 0's loss (unused on the others) and
// `never` enters no loss at all. Initialised without the global RNG: ranks may be threads.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 1));
    extra = register_parameter("extra", torch::zeros({3}));
    never = register_parameter("never", torch::zeros({2}));
    to(torch::kFloat64);
    torch::NoGradGuard no_grad;
    double phase = 0;
    for (auto& p : parameters()) {
      p.copy_((torch::arange(p.numel(), torch::kFloat64) * 0.7 + phase).sin().reshape(p.sizes()) * 0.5);
      phase += 1;
    }
  }
  torch::Tensor loss(int shard, int micro = 0, int micros = 1) {
    const int64_t n = kShard / micros;
    const auto on = torch::TensorOptions().dtype(torch::kFloat64).device(fc1->weight.device());
    const auto x = (torch::arange(64, on) * 0.37).sin().reshape({16, 4});  // [16, 4]
    const auto y = (torch::arange(16, on) * 0.91).cos().reshape({16, 1});  // [16, 1]
    const int64_t start = shard * kShard + micro * n;
    auto out = fc2(torch::tanh(fc1(x.narrow(0, start, n))));  // [n, 1]
    auto l = torch::mse_loss(out, y.narrow(0, start, n));
    if (shard == 0) l = l + extra.pow(2).sum();
    return l;
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::Tensor extra, never;
};
TORCH_MODULE(TinyNet);

// One process, combined batch: the mean of the shard losses is the loss of the combined batch.
std::vector<torch::Tensor> trainReference(int world) {
  TinyNet net;
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    torch::Tensor loss = net->loss(0);
    for (int r = 1; r < world; ++r) loss = loss + net->loss(r);
    (loss / world).backward();
    opt.step();
  }
  EXPECT_FALSE(net->never.grad().defined());
  std::vector<torch::Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
  return out;
}

// One rank: perturbed start (the broadcast must undo it), shard `rank`, `micros` micro-batches.
std::vector<torch::Tensor> trainReplica(Communicator& comm, ReducerOptions options, int micros,
                                        torch::Device device = torch::kCPU) {
  TinyNet net;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(comm.rank());
  }
  net->to(device);
  GradientReducer reducer(*net, comm, options);
  reducer.broadcastParameters();
  checkReplicasAgree(comm, "config: same", *net);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    for (int m = 0; m < micros; ++m) {
      if (m == micros - 1) reducer.prepareForBackward();
      (net->loss(comm.rank(), m, micros) / micros).backward();
    }
    reducer.synchronize();
    opt.step();
  }
  EXPECT_FALSE(net->never.grad().defined()) << "a parameter unused on every rank must keep no gradient";
  std::vector<torch::Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.detach().to(torch::kCPU).clone());
  return out;
}

double maxDifference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

// Runs fn on `world` threads, each rank with its own communicator over one in-memory store. TCPStore is left to the process tests: each of its connections does a
// reverse DNS lookup, which can stall for seconds on sandboxed machines.
void runRanks(int world, std::chrono::milliseconds timeout, const std::function<void(Communicator&)>& fn) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      DistributedEnv env;
      env.rank = env.local_rank = r;
      env.world_size = env.local_world_size = world;
      CommunicatorOptions options;
      options.backend = "gloo";
      options.timeout = timeout;
      try {
        auto comm = makeCommunicator(env, options, store);
        fn(*comm);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
}

// Empty when the gloo backend works, else why not.
const std::string& glooProblem() {
  static const std::string problem = [] {
    try {
      CommunicatorOptions options;
      options.backend = "gloo";
      makeCommunicator(DistributedEnv{}, options, c10::make_intrusive<c10d::HashStore>());
      return std::string();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  }();
  return problem;
}

// A build without gloo skips; gloo that is built but broken (say, bound to libtorch's copy) fails.
#define REQUIRE_GLOO()                                                                         \
  do {                                                                                         \
    const auto& problem = glooProblem();                                                       \
    if (problem.find("no gloo backend") != std::string::npos) GTEST_SKIP() << problem;         \
    ASSERT_TRUE(problem.empty()) << problem;                                                   \
  } while (0)

template <typename F>
std::string errorOf(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Runs the launcher with this test binary as the ranks, playing `scenario`.
int launchScenario(int nproc, const std::string& scenario, std::string* output) {
  setenv("LATENTCELL_TEST_SCENARIO", scenario.c_str(), 1);
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = launchLocal(nproc, {currentExecutable(), "--gtest_filter=DistributedChild.Scenario", "--gtest_brief=1"});
  *output = testing::internal::GetCapturedStdout() + testing::internal::GetCapturedStderr();
  unsetenv("LATENTCELL_TEST_SCENARIO");
  return rc;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Environment

TEST(DistributedEnv, NoVariablesIsOneProcess) {
  const auto env = parseDistributedEnv({});
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.source, "none");
}

TEST(DistributedEnv, TorchrunVariables) {
  const auto env = parseDistributedEnv({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                                        {"LOCAL_WORLD_SIZE", "2"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "1234"},
                                        {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", "2"},
                                        {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(env.source, "torchrun");  // torchrun's variables win over SLURM's
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "node7");
  EXPECT_EQ(env.master_port, 1234);
  EXPECT_TRUE(env.agent_store);
  EXPECT_EQ(env.restart_count, 2);
}

TEST(DistributedEnv, SlurmVariables) {
  const std::map<std::string, std::string> vars = {{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"},
                                                   {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS_PER_NODE", "4"},
                                                   {"SLURM_JOB_NODELIST", "gpu[007-008]"}};
  auto env = parseDistributedEnv(vars);
  EXPECT_EQ(env.source, "slurm");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_addr, "gpu007");
  EXPECT_EQ(env.master_port, 29500);
  EXPECT_FALSE(env.agent_store);
  auto with_master = vars;
  with_master["MASTER_ADDR"] = "login1";
  with_master["MASTER_PORT"] = "4000";
  with_master.erase("SLURM_NTASKS_PER_NODE");
  with_master["SLURM_TASKS_PER_NODE"] = "4(x2)";
  env = parseDistributedEnv(with_master);
  EXPECT_EQ(env.master_addr, "login1");
  EXPECT_EQ(env.master_port, 4000);
  EXPECT_EQ(env.local_world_size, 4);
}

TEST(DistributedEnv, SlurmNodeLists) {
  EXPECT_EQ(firstSlurmHost("node[01-04]"), "node01");
  EXPECT_EQ(firstSlurmHost("a,b"), "a");
  EXPECT_EQ(firstSlurmHost("single"), "single");
  EXPECT_EQ(firstSlurmHost("node[3,5-6],gpu[1-2]"), "node3");
  EXPECT_EQ(firstSlurmHost("rack1-n[009-010]"), "rack1-n009");
  for (const char* bad : {"", "node[01-04", "[01-02]", "node[]", "node[a-b]"}) {
    EXPECT_NE(errorOf([&] { firstSlurmHost(bad); }).find("SLURM_JOB_NODELIST"), std::string::npos) << bad;
  }
}

TEST(DistributedEnv, BadValuesNameTheVariable) {
  const std::vector<std::pair<std::map<std::string, std::string>, std::string>> cases = {
      {{{"RANK", "abc"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}, "RANK='abc' is not an integer"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}, "RANK=2 is not below WORLD_SIZE=2"},
      {{{"RANK", "0"}}, "RANK is set but WORLD_SIZE is not"},
      {{{"WORLD_SIZE", "2"}}, "WORLD_SIZE is set but RANK is not"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE='0'"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "2"}}, "MASTER_ADDR is not set"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}, "MASTER_PORT='70000'"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
       "local rank 2 is not below the 2 ranks per node"},
      {{{"SLURM_PROCID", "0"}}, "SLURM_PROCID is set but SLURM_NTASKS is not"},
      {{{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}}, "SLURM_PROCID=4 is not below SLURM_NTASKS=4"},
      {{{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}, "neither MASTER_ADDR nor"},
      {{{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_JOB_NODELIST", "n[1-2"}},
       "SLURM_JOB_NODELIST='n[1-2'"},
  };
  for (const auto& [vars, expected] : cases) {
    const auto error = errorOf([&] { parseDistributedEnv(vars); });
    EXPECT_NE(error.find(expected), std::string::npos) << "expected '" << expected << "', got '" << error << "'";
  }
}

TEST(DistributedEnv, FactoryChoosesAndRejectsBackends) {
  DistributedEnv env;
  EXPECT_EQ(makeCommunicator(env, "auto", 1s)->name(), "single");
  EXPECT_NE(errorOf([&] { makeCommunicator(env, "mpi", 1s); }).find("unknown distributed backend 'mpi'"),
            std::string::npos);
  env.world_size = 2;
  EXPECT_NE(errorOf([&] { makeCommunicator(env, "single", 1s); }).find("world size is 2"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Gloo, ranks as threads

TEST(Gloo, CollectivesOnThreads) {
  REQUIRE_GLOO();
  for (int world : {2, 3}) {
    runRanks(world, 5s, [world](Communicator& comm) {
      const int r = comm.rank();
      const double total = world * (world + 1) / 2.0;  // sum of r + 1
      auto f = torch::full({5}, r + 1.0, torch::kFloat);  // [5]
      comm.allreduceSum(f);
      EXPECT_TRUE(f.equal(torch::full({5}, total, torch::kFloat)));
      auto l = torch::full({3}, int64_t{r + 1}, torch::kLong);  // [3]
      comm.allreduceSum(l);
      EXPECT_EQ(l[2].item<int64_t>(), static_cast<int64_t>(total));
      auto b = torch::full({4}, r + 1.0, torch::kBFloat16);  // [4]
      comm.allreduceSum(b);
      EXPECT_EQ(b[0].item<double>(), total);
      // Non-contiguous: the transpose of [[r, r], [2r, 2r]]
      auto t = torch::tensor({{1.0, 1.0}, {2.0, 2.0}}, torch::kDouble).mul(r + 1).t();  // [2, 2]
      comm.allreduceSum(t);
      EXPECT_TRUE(t.equal(torch::tensor({{1.0, 2.0}, {1.0, 2.0}}, torch::kDouble) * total));
      auto w = torch::arange(6, torch::kFloat).add(10 * r);  // [6]
      comm.broadcast(w, world - 1);
      EXPECT_TRUE(w.equal(torch::arange(6, torch::kFloat).add(10 * (world - 1))));
      comm.barrier();
      const auto ints = comm.allgather(std::vector<int64_t>{r, 100 + r});
      const auto doubles = comm.allgather(std::vector<double>{0.5 * r});
      ASSERT_EQ(ints.size(), 2u * world);
      for (int k = 0; k < world; ++k) {
        EXPECT_EQ(ints[2 * k], k);
        EXPECT_EQ(ints[2 * k + 1], 100 + k);
        EXPECT_EQ(doubles[k], 0.5 * k);
      }
      EXPECT_THROW(comm.allreduceSum(torch::zeros({2}, torch::kComplexFloat)), std::runtime_error);
    });
  }
}

// Gloo collectives run on a worker thread: allreduceSumAsync returns before the peer has even
// arrived (rank 1 only joins once rank 0's call returned), and wait() then completes the sum.
TEST(Gloo, AsyncAllreduceReturnsBeforeThePeerArrives) {
  REQUIRE_GLOO();
  std::promise<void> launched;
  auto launched_future = launched.get_future().share();
  runRanks(2, 10s, [&](Communicator& comm) {
    EXPECT_TRUE(comm.asyncCollectives());
    auto t = torch::full({4}, comm.rank() + 1.0);  // [4]
    if (comm.rank() == 0) {
      auto work = comm.allreduceSumAsync(t);
      launched.set_value();
      work->wait();
    } else {
      ASSERT_EQ(launched_future.wait_for(20s), std::future_status::ready) << "allreduceSumAsync blocked";
      comm.allreduceSum(t);
    }
    EXPECT_TRUE(t.equal(torch::full({4}, 3.0)));
  });
}

TEST(Gloo, ReducerMatchesOneProcessOnTheCombinedBatch) {
  REQUIRE_GLOO();
  const auto reference = trainReference(2);
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "buckets reduced during backward" : "buckets reduced after backward");
    std::vector<std::vector<torch::Tensor>> result(2);
    runRanks(2, 5s, [&](Communicator& comm) {
      ReducerOptions options;
      options.bucket_bytes = 64;  // several buckets
      options.overlap = overlap;
      result[comm.rank()] = trainReplica(comm, options, /*micros=*/1);
    });
    ASSERT_FALSE(result[0].empty());
    ASSERT_FALSE(result[1].empty());
    EXPECT_EQ(maxDifference(result[0], result[1]), 0.0) << "replicas must stay bit-identical";
    EXPECT_LT(maxDifference(result[0], reference), 1e-6);
  }
}

// With real gloo the backward hooks launch every bucket before backward returns (all parameters
// used); with overlap off none is launched until synchronize(). Both give the same gradients.
TEST(Gloo, BucketsAreLaunchedDuringBackward) {
  REQUIRE_GLOO();
  runRanks(2, 5s, [&](Communicator& comm) {
    std::vector<torch::Tensor> grads[2];
    for (const bool overlap : {true, false}) {
      auto net = torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 1));
      net->to(torch::kFloat64);
      {
        torch::NoGradGuard no_grad;  // the same start for both variants
        for (auto& p : net->parameters()) p.copy_((torch::arange(p.numel(), torch::kFloat64) * 0.3).sin().view_as(p));
      }
      ReducerOptions options;
      options.bucket_bytes = 64;
      options.overlap = overlap;
      GradientReducer reducer(*net, comm, options);
      reducer.broadcastParameters();
      ASSERT_GT(reducer.numBuckets(), 1);
      reducer.prepareForBackward();
      net->forward(torch::full({2, 4}, comm.rank() + 1.0, torch::kFloat64)).sum().backward();
      EXPECT_EQ(reducer.launchedBuckets(), overlap ? reducer.numBuckets() : 0);
      reducer.synchronize();
      for (const auto& p : net->parameters()) grads[overlap].push_back(p.grad().clone());
    }
    EXPECT_EQ(maxDifference(grads[0], grads[1]), 0.0);
  });
}

// A communicator whose all-reduces only run at wait(), in launch order: stands in for an
// asynchronous backend (nccl) so that the overlap hooks run on CPU.
class DeferredCommunicator final : public Communicator {
 public:
  explicit DeferredCommunicator(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int worldSize() const override { return inner_.worldSize(); }
  std::string name() const override { return "deferred-" + inner_.name(); }
  c10::DeviceType deviceType() const override { return inner_.deviceType(); }
  void broadcast(const at::Tensor& t, int root) override { inner_.broadcast(t, root); }
  void allreduceSum(const at::Tensor& t) override { inner_.allreduceSum(t); }
  bool asyncCollectives() const override { return true; }
  std::unique_ptr<CollectiveWork> allreduceSumAsync(const at::Tensor& t) override {
    struct Deferred final : CollectiveWork {
      Deferred(Communicator& c, at::Tensor t) : comm(c), tensor(std::move(t)) {}
      void wait() override { comm.allreduceSum(tensor); }
      Communicator& comm;
      at::Tensor tensor;
    };
    ++launched;
    return std::make_unique<Deferred>(inner_, t);
  }
  std::vector<int64_t> allgather(const std::vector<int64_t>& v) override { return inner_.allgather(v); }
  std::vector<double> allgather(const std::vector<double>& v) override { return inner_.allgather(v); }
  void barrier() override { inner_.barrier(); }
  int launched = 0;

 private:
  Communicator& inner_;
};

TEST(Gloo, OverlapHooksWithAccumulationAndUnusedParameters) {
  REQUIRE_GLOO();
  const auto reference = trainReference(2);
  std::vector<std::vector<torch::Tensor>> result(2);
  runRanks(2, 5s, [&](Communicator& inner) {
    DeferredCommunicator comm(inner);
    ReducerOptions options;
    options.bucket_bytes = 64;
    result[inner.rank()] = trainReplica(comm, options, /*micros=*/2);
  });
  ASSERT_FALSE(result[0].empty());
  EXPECT_EQ(maxDifference(result[0], result[1]), 0.0);
  EXPECT_LT(maxDifference(result[0], reference), 1e-6);
}

TEST(Gloo, OverlapHooksLaunchAsSoonAsABucketFills) {
  REQUIRE_GLOO();
  // Every parameter used on every rank: all buckets launch from the hooks, none in synchronize().
  runRanks(2, 5s, [&](Communicator& inner) {
    DeferredCommunicator comm(inner);
    auto net = torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 1));
    net->to(torch::kFloat64);
    ReducerOptions options;
    options.bucket_bytes = 64;
    GradientReducer reducer(*net, comm, options);
    reducer.broadcastParameters();
    reducer.prepareForBackward();
    net->forward(torch::ones({2, 4}, torch::kFloat64)).sum().backward();
    EXPECT_EQ(comm.launched, reducer.numBuckets());
    reducer.synchronize();
    // A second backward after one prepareForBackward() would miss the reduction: refused.
    reducer.prepareForBackward();
    net->forward(torch::ones({2, 4}, torch::kFloat64)).sum().backward();
    net->forward(torch::ones({2, 4}, torch::kFloat64)).sum().backward();
    EXPECT_NE(errorOf([&] { reducer.synchronize(); }).find("after its bucket was reduced"), std::string::npos);
  });
}

TEST(Gloo, StartupCheckNamesTheRanksThatDiffer) {
  REQUIRE_GLOO();
  runRanks(3, 5s, [](Communicator& comm) {
    TinyNet net;
    {
      torch::NoGradGuard no_grad;
      net->fc1->weight.add_(comm.rank() == 2 ? 1.0 : 0.0);
    }
    const std::string config = comm.rank() == 1 ? "lr: 0.2" : "lr: 0.1";
    const auto error = errorOf([&] { checkReplicasAgree(comm, config, *net); });
    EXPECT_NE(error.find("rank 1 differs in the resolved config"), std::string::npos) << error;
    EXPECT_NE(error.find("rank 2 differs in the initial parameters"), std::string::npos) << error;
    GradientReducer reducer(*net, comm);
    reducer.broadcastParameters();
    EXPECT_NO_THROW(checkReplicasAgree(comm, "lr: 0.1", *net));
  });
}

TEST(Gloo, LostRankIsNamedWithinTheTimeout) {
  REQUIRE_GLOO();
  std::promise<void> rank0_done;
  auto rank0_future = rank0_done.get_future().share();
  runRanks(2, 2s, [&](Communicator& comm) {
    auto t = torch::ones({4});  // [4]
    comm.allreduceSum(t);
    if (comm.rank() == 1) {
      rank0_future.wait();  // stops participating, but stays alive until rank 0 gave up
      return;
    }
    const auto start = Clock::now();
    const auto error = errorOf([&] { comm.allreduceSum(t); });
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    rank0_done.set_value();
    EXPECT_NE(error.find("rank 1 did not arrive"), std::string::npos) << error;
    EXPECT_GE(elapsed, 1.9);
    EXPECT_LT(elapsed, 3.5);
    EXPECT_NE(errorOf([&] { comm.barrier(); }).find("unusable"), std::string::npos);
  });
}

TEST(Gloo, MissingRankAtStartupIsNamed) {
  REQUIRE_GLOO();
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {  // rank 2 of 3 never starts
    threads.emplace_back([&, r] {
      DistributedEnv env;
      env.rank = env.local_rank = r;
      env.world_size = env.local_world_size = 3;
      CommunicatorOptions options;
      options.backend = "gloo";
      options.timeout = 1s;
      errors[r] = errorOf([&] { makeCommunicator(env, options, store); });
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_NE(e.find("rank 2 did not join within 1.0 s"), std::string::npos) << e;
}

// ---------------------------------------------------------------------------------------------
// Launcher

TEST(Launcher, ForwardsOutputAndSetsTheRankEnvironment) {
  testing::internal::CaptureStdout();
  const int rc = launchLocal(2, {"sh", "-c",
                                 "echo rank=$RANK local=$LOCAL_RANK world=$WORLD_SIZE addr=$MASTER_ADDR "
                                 "agent=$TORCHELASTIC_USE_AGENT_STORE; printf partial"});
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("[rank 0] rank=0 local=0 world=2 addr=127.0.0.1 agent=True"), std::string::npos) << out;
  EXPECT_NE(out.find("[rank 1] rank=1 local=1 world=2"), std::string::npos) << out;
  EXPECT_NE(out.find("[rank 1] partial\n"), std::string::npos) << out;
}

TEST(Launcher, StopsTheOtherRanksWhenOneFails) {
  testing::internal::CaptureStderr();
  const auto start = Clock::now();
  const int rc = launchLocal(2, {"sh", "-c", "if [ $RANK = 1 ]; then echo oops >&2; exit 3; fi; exec sleep 30"});
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 3);
  EXPECT_LT(elapsed, 8.0);
  EXPECT_NE(err.find("[rank 1] oops"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 (pid"), std::string::npos) << err;
  EXPECT_NE(err.find("exited with code 3"), std::string::npos) << err;
}

TEST(Launcher, RefusesBadRequests) {
  EXPECT_NE(errorOf([] { launchLocal(0, {"true"}); }).find("at least 1"), std::string::npos);
  EXPECT_NE(errorOf([] { launchLocal(1, {"no-such-program-latentcell"}); }).find("not found"), std::string::npos);
  setenv("LATENTCELL_LOCAL_LAUNCH", "1", 1);
  EXPECT_NE(errorOf([] { launchLocal(2, {"true"}); }).find("nested launch"), std::string::npos);
  unsetenv("LATENTCELL_LOCAL_LAUNCH");
}

TEST(Launcher, RunsLatentcellInfoAsTheRanks) {
  if (!std::filesystem::exists(LATENTCELL_BINARY)) GTEST_SKIP() << "build the latentcell target first";
  testing::internal::CaptureStdout();
  const int rc = launchLocal(2, {LATENTCELL_BINARY, "info"});
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("[rank 1] "), std::string::npos) << out;
}

// ---------------------------------------------------------------------------------------------
// Ranks as processes

// One rank of a launched scenario (see launchScenario); skipped in ordinary runs.
TEST(DistributedChild, Scenario) {
  const char* scenario = std::getenv("LATENTCELL_TEST_SCENARIO");
  if (scenario == nullptr) GTEST_SKIP() << "plays one rank when the DistributedProcesses tests launch this binary";
  const auto env = readDistributedEnv();
  const std::string which = scenario;
  const bool nccl = which == "nccl";
  CommunicatorOptions options;
  options.backend = nccl ? "nccl" : "gloo";
  options.timeout = which == "lost" ? 2s : 10s;
  options.join_timeout = 30s;
  auto comm = makeCommunicator(env, options);
  const torch::Device device = nccl ? torch::Device(torch::kCUDA, env.local_rank) : torch::Device(torch::kCPU);
  auto x = torch::full({3}, env.rank + 1.0, torch::TensorOptions().device(device));  // [3]
  comm->allreduceSum(x);
  EXPECT_EQ(x[0].item<double>(), env.world_size * (env.world_size + 1) / 2.0);
  comm->barrier();
  if (which == "lost") {
    if (env.rank == 1) _exit(0);  // gone without a word
    const auto start = Clock::now();
    const auto error = errorOf([&] { comm->allreduceSum(x); });
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    std::cerr << "lost-rank error: " << error << "\n";
    EXPECT_NE(error.find("rank 1"), std::string::npos);
    EXPECT_LT(elapsed, 3.5);
    return;
  }
  auto y = torch::arange(4, torch::TensorOptions().device(device).dtype(torch::kFloat)).add(env.rank * 10);  // [4]
  comm->broadcast(y, 0);
  EXPECT_TRUE(y.cpu().equal(torch::arange(4, torch::kFloat)));
  ReducerOptions reducer_options;
  reducer_options.bucket_bytes = 64;
  const auto params = trainReplica(*comm, reducer_options, /*micros=*/2, device);
  EXPECT_LT(maxDifference(params, trainReference(env.world_size)), 1e-6);
  std::vector<double> sums;
  for (const auto& p : params) sums.push_back(p.sum().item<double>());
  const auto all = comm->allgather(sums);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], sums[i % sums.size()]) << "replicas differ";
  comm->barrier();
}

TEST(DistributedProcesses, GlooTrainingAcrossTwoProcesses) {
  REQUIRE_GLOO();
  std::string output;
  const int rc = launchScenario(2, "train", &output);
  EXPECT_EQ(rc, 0) << output;
}

TEST(DistributedProcesses, LostProcessIsNamed) {
  REQUIRE_GLOO();
  std::string output;
  const int rc = launchScenario(2, "lost", &output);
  EXPECT_EQ(rc, 0) << output;
  EXPECT_NE(output.find("[rank 0] lost-rank error: gloo allreduce"), std::string::npos) << output;
}

TEST(DistributedProcesses, NcclTrainingAcrossTheVisibleGpus) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  std::string output;
  const int gpus = static_cast<int>(torch::cuda::device_count());
  const int rc = launchScenario(std::min(gpus, 2), "nccl", &output);
  EXPECT_EQ(rc, 0) << output;
}
