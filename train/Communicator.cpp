// Communicators (see Communicator.h).
//
// Failure reporting is the design constraint. A collective that fails or times out says only that
// its peer did not answer, so every rank also publishes "last collective reached" and a heartbeat
// to the rendezvous store from a background thread with its own store connection (off the hot
// path). The rank whose collective failed reads them and names the ranks that never arrived, or
// that arrived but stopped beating (died mid-collective). Collectives are numbered identically on
// every rank, which also keys the store-based allgather and the gloo tags.
#include "train/Communicator.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/cuda.h>

#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#if LATENTCELL_WITH_GLOO
#include <dlfcn.h>
#include <unistd.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#endif

#if LATENTCELL_WITH_NCCL
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>
#endif

namespace latentcell::train {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------------------------
// Environment

namespace {

std::optional<std::string> lookup(const std::map<std::string, std::string>& vars, const std::string& name) {
  const auto it = vars.find(name);
  if (it == vars.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

int parseInt(const std::string& name, const std::string& value, int min, int max) {
  size_t used = 0;
  long long parsed = 0;
  try {
    parsed = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || used == 0 || parsed < min || parsed > max) {
    throw std::runtime_error(fmt::format("{}='{}' is not an integer in [{}, {}]", name, value, min, max));
  }
  return static_cast<int>(parsed);
}

// SLURM_NTASKS_PER_NODE is "4"; SLURM_TASKS_PER_NODE can be "4(x2),3": take the leading count.
std::optional<int> leadingCount(const std::optional<std::string>& value) {
  if (!value) return std::nullopt;
  size_t end = 0;
  while (end < value->size() && std::isdigit(static_cast<unsigned char>((*value)[end]))) ++end;
  if (end == 0) return std::nullopt;
  return std::stoi(value->substr(0, end));
}

}  // namespace

std::string firstSlurmHost(const std::string& nodelist) {
  const auto bad = [&] {
    return std::runtime_error(fmt::format(
        "SLURM_JOB_NODELIST='{}' is not a node list like node[01-04] or a,b; set MASTER_ADDR instead", nodelist));
  };
  // The first entry ends at the first comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) throw bad();
    if (c == ',' && depth == 0) break;
  }
  const std::string entry = nodelist.substr(0, end);
  const auto open = entry.find('[');
  if (open == std::string::npos) {
    if (entry.empty() || entry.find(']') != std::string::npos) throw bad();
    return entry;
  }
  const auto close = entry.find(']', open);
  if (close == std::string::npos || open == 0) throw bad();
  const std::string ranges = entry.substr(open + 1, close - open - 1);
  // Keep the first number as written: zero padding is part of the host name.
  const std::string first = ranges.substr(0, ranges.find_first_of(",-"));
  if (first.empty() || first.find_first_not_of("0123456789") != std::string::npos) throw bad();
  return entry.substr(0, open) + first + entry.substr(close + 1);
}

DistributedEnv parseDistributedEnv(const std::map<std::string, std::string>& vars) {
  DistributedEnv env;
  constexpr int kMaxRanks = 1 << 20;
  const auto port = [&] {
    const auto value = lookup(vars, "MASTER_PORT");
    return value ? parseInt("MASTER_PORT", *value, 1, 65535) : 29500;
  };
  const bool torchrun = lookup(vars, "RANK") || lookup(vars, "WORLD_SIZE");
  const bool slurm = lookup(vars, "SLURM_PROCID").has_value();
  if (torchrun) {
    const auto rank = lookup(vars, "RANK");
    const auto world = lookup(vars, "WORLD_SIZE");
    if (!rank || !world) {
      throw std::runtime_error(fmt::format("{} is set but {} is not; set both, as torchrun does",
                                           rank ? "RANK" : "WORLD_SIZE", rank ? "WORLD_SIZE" : "RANK"));
    }
    env.source = "torchrun";
    env.world_size = parseInt("WORLD_SIZE", *world, 1, kMaxRanks);
    env.rank = parseInt("RANK", *rank, 0, kMaxRanks);
    if (env.rank >= env.world_size) {
      throw std::runtime_error(fmt::format("RANK={} is not below WORLD_SIZE={}", env.rank, env.world_size));
    }
    const auto local_world = lookup(vars, "LOCAL_WORLD_SIZE");
    env.local_world_size = local_world ? parseInt("LOCAL_WORLD_SIZE", *local_world, 1, env.world_size) : env.world_size;
    // Without LOCAL_RANK (a plain mpirun-style launch) assume one node.
    const auto local_rank = lookup(vars, "LOCAL_RANK");
    env.local_rank = local_rank ? parseInt("LOCAL_RANK", *local_rank, 0, kMaxRanks) : env.rank;
    const auto addr = lookup(vars, "MASTER_ADDR");
    if (!addr && env.world_size > 1) {
      throw std::runtime_error(fmt::format("WORLD_SIZE={} but MASTER_ADDR is not set; set it to rank 0's host",
                                           env.world_size));
    }
    if (addr) env.master_addr = *addr;
    env.master_port = port();
    env.agent_store = lookup(vars, "TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    const auto restarts = lookup(vars, "TORCHELASTIC_RESTART_COUNT");
    env.restart_count = restarts ? parseInt("TORCHELASTIC_RESTART_COUNT", *restarts, 0, 1 << 30) : 0;
  } else if (slurm) {
    const auto ntasks = lookup(vars, "SLURM_NTASKS");
    if (!ntasks) throw std::runtime_error("SLURM_PROCID is set but SLURM_NTASKS is not; start the ranks with srun");
    env.source = "slurm";
    env.world_size = parseInt("SLURM_NTASKS", *ntasks, 1, kMaxRanks);
    env.rank = parseInt("SLURM_PROCID", *lookup(vars, "SLURM_PROCID"), 0, kMaxRanks);
    if (env.rank >= env.world_size) {
      throw std::runtime_error(
          fmt::format("SLURM_PROCID={} is not below SLURM_NTASKS={}", env.rank, env.world_size));
    }
    const auto local_rank = lookup(vars, "SLURM_LOCALID");
    if (!local_rank && env.world_size > 1) {
      throw std::runtime_error("SLURM_NTASKS > 1 but SLURM_LOCALID is not set; start the ranks with srun");
    }
    env.local_rank = local_rank ? parseInt("SLURM_LOCALID", *local_rank, 0, kMaxRanks) : 0;
    auto per_node = leadingCount(lookup(vars, "SLURM_NTASKS_PER_NODE"));
    if (!per_node) per_node = leadingCount(lookup(vars, "SLURM_TASKS_PER_NODE"));
    env.local_world_size = per_node.value_or(env.world_size);
    auto nodes = lookup(vars, "SLURM_JOB_NODELIST");
    if (!nodes) nodes = lookup(vars, "SLURM_NODELIST");
    if (const auto addr = lookup(vars, "MASTER_ADDR")) {
      env.master_addr = *addr;
    } else if (nodes) {
      env.master_addr = firstSlurmHost(*nodes);
    } else if (env.world_size > 1) {
      throw std::runtime_error("SLURM_NTASKS > 1 but neither MASTER_ADDR nor SLURM_JOB_NODELIST is set");
    }
    env.master_port = port();
  } else {
    return env;
  }
  if (env.local_rank >= env.local_world_size) {
    throw std::runtime_error(fmt::format("local rank {} is not below the {} ranks per node ({} variables)",
                                         env.local_rank, env.local_world_size, env.source));
  }
  if (env.local_rank > env.rank) {
    throw std::runtime_error(fmt::format("local rank {} exceeds the global rank {} ({} variables)", env.local_rank,
                                         env.rank, env.source));
  }
  return env;
}

DistributedEnv readDistributedEnv() {
  static const char* const kNames[] = {
      "RANK",          "WORLD_SIZE",    "LOCAL_RANK",       "LOCAL_WORLD_SIZE",      "MASTER_ADDR",
      "MASTER_PORT",   "SLURM_PROCID",  "SLURM_NTASKS",     "SLURM_LOCALID",         "SLURM_NTASKS_PER_NODE",
      "SLURM_TASKS_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "TORCHELASTIC_USE_AGENT_STORE",
      "TORCHELASTIC_RESTART_COUNT"};
  std::map<std::string, std::string> vars;
  for (const char* name : kNames) {
    if (const char* value = std::getenv(name)) vars[name] = value;
  }
  return parseDistributedEnv(vars);
}

// ---------------------------------------------------------------------------------------------
// Rendezvous

c10::intrusive_ptr<c10d::Store> connectStore(const DistributedEnv& env, milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(env.master_port);
  opts.isServer = env.rank == 0 && !env.agent_store;
  opts.waitWorkers = false;
  opts.timeout = timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
  } catch (const c10::Error& e) {
    if (opts.isServer) {
      throw std::runtime_error(fmt::format("rank 0 cannot host the rendezvous store on port {} ({}); set MASTER_PORT "
                                           "to a free port",
                                           env.master_port, e.what_without_backtrace()));
    }
    throw std::runtime_error(fmt::format(
        "rank {} cannot reach the rendezvous store at {}:{} within {:.0f} s ({}); check MASTER_ADDR and MASTER_PORT "
        "and that rank 0 started",
        env.rank, env.master_addr, env.master_port, timeout.count() / 1000.0, e.what_without_backtrace()));
  }
}

std::unique_ptr<CollectiveWork> Communicator::allreduceSumAsync(const at::Tensor& tensor) {
  struct Done final : CollectiveWork {
    void wait() override {}
  };
  allreduceSum(tensor);
  return std::make_unique<Done>();
}

namespace {

std::vector<uint8_t> toBytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string fromBytes(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::string rankList(const std::vector<int>& ranks) {
  return fmt::format("rank{} {}", ranks.size() > 1 ? "s" : "", fmt::join(ranks, ", "));
}

// Library messages start with "[file:line] "; the location says nothing to a user.
std::string stripLocation(std::string message) {
  if (!message.empty() && message.front() == '[') {
    const auto end = message.find("] ");
    if (end != std::string::npos) message.erase(0, end + 2);
  }
  const auto newline = message.find('\n');
  if (newline != std::string::npos) message.erase(newline);
  return message;
}

struct Timeouts {
  milliseconds collective;
  milliseconds join;
};

// ---------------------------------------------------------------------------------------------
// The store-backed part shared by the gloo and nccl communicators: join, progress, allgather,
// failure diagnosis.

class StoreCommunicator : public Communicator {
 public:
  StoreCommunicator(const DistributedEnv& env, const Timeouts& timeouts, c10::intrusive_ptr<c10d::Store> store,
                    std::string backend)
      : store_(std::move(store)),
        rank_(env.rank),
        world_(env.world_size),
        timeout_(timeouts.collective),
        join_timeout_(timeouts.join),
        backend_(std::move(backend)),
        prefix_(fmt::format("latentcell/attempt_{}/{}/", env.restart_count, backend_)) {
    // The clone connects under the store's own (join) timeout, before the collective one applies.
    monitor_store_ = store_->clone();
    monitor_store_->setTimeout(timeout_);
    store_->setTimeout(timeout_);
    monitor_ = std::thread([this] { monitorLoop(); });
  }

  ~StoreCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    monitor_.join();
  }

  int rank() const override { return rank_; }
  int worldSize() const override { return world_; }
  std::string name() const override { return backend_; }

  std::vector<int64_t> allgather(const std::vector<int64_t>& values) override { return gather(values); }
  std::vector<double> allgather(const std::vector<double>& values) override { return gather(values); }

 protected:
  std::string key(const std::string& k) const { return prefix_ + k; }

  // Waits until every rank reached `stage`, naming the ranks that did not.
  void join(const std::string& stage) {
    std::vector<std::string> keys;
    for (int r = 0; r < world_; ++r) keys.push_back(key(fmt::format("join/{}/{}", stage, r)));
    store_->set(keys[rank_], toBytes("1"));
    try {
      store_->wait(keys, join_timeout_);
    } catch (const c10::Error&) {
      std::vector<int> missing;
      for (int r = 0; r < world_; ++r) {
        if (!store_->check({keys[r]})) missing.push_back(r);
      }
      throw std::runtime_error(fmt::format("{}: {} did not join within {:.1f} s; start every rank with the same "
                                           "MASTER_ADDR, MASTER_PORT and WORLD_SIZE={}",
                                           backend_, rankList(missing), seconds(join_timeout_), world_));
    }
  }

  // Numbers the next collective and publishes the arrival (through the monitor thread).
  uint64_t arrive() {
    checkUsable();
    const uint64_t seq = ++seq_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      arrived_ = seq;
    }
    cv_.notify_one();
    return seq;
  }

  void checkUsable() const {
    if (!broken_.empty()) throw std::runtime_error(fmt::format("communicator unusable after: {}", broken_));
  }

  // Turns a failure of collective #seq into the one-line error and poisons the communicator.
  [[noreturn]] void fail(uint64_t seq, const std::string& op, Clock::time_point start, const std::string& cause) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    broken_ = fmt::format("{} {} #{} failed on rank {} after {:.1f} s: {} ({})", backend_, op, seq, rank_, elapsed,
                          diagnose(seq), stripLocation(cause));
    throw std::runtime_error(broken_);
  }

  static double seconds(milliseconds t) { return static_cast<double>(t.count()) / 1000.0; }

  c10::intrusive_ptr<c10d::Store> store_;
  const int rank_;
  const int world_;
  const milliseconds timeout_;
  const milliseconds join_timeout_;

 private:
  static constexpr milliseconds kBeat{200};

  struct Progress {
    int64_t seq = -1;   // last collective reached; -1 when the rank never published
    int64_t beat = -1;  // heartbeat counter
  };

  void monitorLoop() {
    const std::string k = key(fmt::format("progress/{}", rank_));
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t published = 0;
    while (!stop_) {
      cv_.wait_for(lock, kBeat, [&] { return stop_ || arrived_ != published; });
      if (stop_) break;
      published = arrived_;
      const std::string value = fmt::format("{} {}", published, ++beat_);
      lock.unlock();
      try {
        monitor_store_->set(k, toBytes(value));
      } catch (const std::exception&) {
        // The store is gone; the next collective that fails reports it.
      }
      lock.lock();
    }
  }

  std::vector<Progress> readProgress() {
    std::vector<Progress> all(world_);
    for (int r = 0; r < world_; ++r) {
      const std::string k = key(fmt::format("progress/{}", r));
      if (!store_->check({k})) continue;
      const std::string value = fromBytes(store_->get(k));
      long long seq = -1, beat = -1;
      if (std::sscanf(value.c_str(), "%lld %lld", &seq, &beat) == 2) all[r] = {seq, beat};
    }
    return all;
  }

  std::string diagnose(uint64_t seq) {
    try {
      const auto before = readProgress();
      std::vector<int> lagging;
      std::vector<std::string> where;
      for (int r = 0; r < world_; ++r) {
        if (r != rank_ && before[r].seq < static_cast<int64_t>(seq)) {
          lagging.push_back(r);
          where.push_back(before[r].seq < 0 ? "never started" : fmt::format("#{}", before[r].seq));
        }
      }
      if (!lagging.empty()) {
        return fmt::format("{} did not arrive (last collective: {})", rankList(lagging), fmt::join(where, ", "));
      }
      // Everyone arrived: whoever stops beating died mid-collective.
      std::this_thread::sleep_for(kBeat * 5 / 2);
      const auto after = readProgress();
      std::vector<int> silent;
      for (int r = 0; r < world_; ++r) {
        if (r != rank_ && after[r].beat == before[r].beat) silent.push_back(r);
      }
      if (!silent.empty()) return fmt::format("{} stopped responding (no heartbeat)", rankList(silent));
      return "every rank arrived and is alive; the transport failed";
    } catch (const std::exception&) {
      return "the rendezvous store is unreachable (its host, rank 0 or the launcher, is gone)";
    }
  }

  template <typename T>
  std::vector<T> gather(const std::vector<T>& values) {
    const uint64_t seq = arrive();
    const auto start = Clock::now();
    const auto k = [&](uint64_t s, int r) { return key(fmt::format("gather/{}/{}", s, r)); };
    std::vector<uint8_t> mine(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(mine.data(), values.data(), mine.size());
    std::vector<std::string> keys;
    for (int r = 0; r < world_; ++r) keys.push_back(k(seq, r));
    std::vector<std::vector<uint8_t>> all;
    try {
      store_->set(keys[rank_], mine);
      store_->wait(keys, timeout_);
      all = store_->multiGet(keys);
      // Every rank has read the previous round (it reached this one), so its keys can go.
      if (last_gather_ > 0) store_->deleteKey(k(last_gather_, rank_));
    } catch (const c10::Error& e) {
      fail(seq, "allgather", start, e.what_without_backtrace());
    }
    last_gather_ = seq;
    std::vector<T> out(values.size() * world_);
    for (int r = 0; r < world_; ++r) {
      if (all[r].size() != mine.size()) {
        throw std::runtime_error(fmt::format("allgather #{}: rank {} sent {} values, rank {} sent {}", seq, r,
                                             all[r].size() / sizeof(T), rank_, values.size()));
      }
      if (!mine.empty()) std::memcpy(out.data() + r * values.size(), all[r].data(), mine.size());
    }
    return out;
  }

  const std::string backend_;
  const std::string prefix_;
  c10::intrusive_ptr<c10d::Store> monitor_store_;  // the monitor's own connection
  std::atomic<uint64_t> seq_{0};
  uint64_t last_gather_ = 0;
  std::string broken_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t arrived_ = 0;
  int64_t beat_ = 0;
  bool stop_ = false;
  std::thread monitor_;  // last: started once everything above exists
};

// ---------------------------------------------------------------------------------------------
// Gloo

#if LATENTCELL_WITH_GLOO

// libtorch_cpu exports its own, newer gloo under the same symbol names as Debian's libgloo. The
// dynamic linker binds every name to the first library in its search order that defines it, so
// the executable must load libgloo before libtorch (train/CMakeLists.txt links it first); with the
// order reversed our calls would run libtorch's gloo on Debian's struct layouts. Checked, not assumed.
void checkGlooBinding() {
  void* symbol = dlsym(RTLD_DEFAULT, "_ZN4gloo9allreduceERKNS_16AllreduceOptionsE");  // gloo::allreduce
  Dl_info info{};
  const bool ok = symbol != nullptr && dladdr(symbol, &info) != 0 && info.dli_fname != nullptr &&
                  std::strstr(info.dli_fname, "libgloo") != nullptr;
  if (!ok) {
    throw std::runtime_error(fmt::format(
        "gloo symbols bind to {} instead of Debian's libgloo.so.0 (libtorch_cpu bundles another gloo); link "
        "libgloo before the torch libraries",
        symbol != nullptr && info.dli_fname != nullptr ? info.dli_fname : "nothing"));
  }
}

// gloo's rendezvous over the c10d store, under our key prefix.
class GlooStore final : public gloo::rendezvous::Store {
 public:
  GlooStore(c10d::Store& store, std::string prefix, milliseconds timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    store_.set(prefix_ + key, std::vector<uint8_t>(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    const auto value = store_.get(prefix_ + key);
    return {value.begin(), value.end()};
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override {
    std::vector<std::string> prefixed;
    for (const auto& k : keys) prefixed.push_back(prefix_ + k);
    store_.wait(prefixed, timeout);
  }

 private:
  c10d::Store& store_;
  std::string prefix_;
  milliseconds timeout_;
};

bool isLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Gloo's collectives block the calling thread, so allreduceSumAsync queues the collective for a
// worker thread and returns, which lets the gradient reducer overlap a bucket's all-reduce with the
// rest of backward. Collectives run strictly in call order (the order every rank numbers them in):
// a blocking collective runs on the calling thread when nothing is queued or running (no thread
// handoff), else it queues behind the others and waits. After a failure the collectives not yet
// run fail with the first error instead of each waiting out the timeout again.
class GlooCommunicator final : public StoreCommunicator {
 public:
  GlooCommunicator(const DistributedEnv& env, const Timeouts& timeouts, c10::intrusive_ptr<c10d::Store> store)
      : StoreCommunicator(env, timeouts, std::move(store), "gloo") {
    checkGlooBinding();
    join("connect");
    // The device binds to this host's address: loopback when the job is local (sandboxed machines
    // have no routable interface), GLOO_SOCKET_IFNAME when set (as in PyTorch), else the hostname.
    gloo::transport::tcp::attr attr;
    if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"); iface != nullptr && *iface != '\0') {
      attr.iface = iface;
    } else if (isLoopback(env.master_addr)) {
      attr.hostname = "127.0.0.1";
    } else {
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      attr.hostname = host;
    }
    try {
      auto device = gloo::transport::tcp::CreateDevice(attr);
      auto context = std::make_shared<gloo::rendezvous::Context>(rank_, world_);
      // Connecting is part of joining; every collective then passes its own timeout.
      context->setTimeout(join_timeout_);
      GlooStore rendezvous(*store_, key("mesh/"), join_timeout_);
      context->connectFullMesh(rendezvous, device);
      context->setTimeout(timeout_);
      context_ = std::move(context);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("gloo: rank {} cannot connect to its peers ({}); set GLOO_SOCKET_IFNAME to "
                                           "the network interface the ranks share",
                                           rank_, stripLocation(e.what())));
    }
    worker_ = std::thread([this] { workerLoop(); });
  }

  ~GlooCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_one();
    worker_.join();
  }

  c10::DeviceType deviceType() const override { return c10::kCPU; }
  bool asyncCollectives() const override { return true; }

  void broadcast(const at::Tensor& tensor, int root) override {
    checkRoot(root);
    inPlace(tensor, "broadcast", [&](const at::Tensor& t) {
      runBlocking("broadcast", [this, t, root](uint32_t tag) {
        gloo::BroadcastOptions opts(context_);
        opts.setOutput(static_cast<uint8_t*>(t.data_ptr()), t.nbytes());
        opts.setRoot(root);
        opts.setTag(tag);
        opts.setTimeout(timeout_);
        gloo::broadcast(opts);
      });
    });
  }

  void allreduceSum(const at::Tensor& tensor) override {
    checkReducible(tensor);
    inPlace(tensor, "allreduceSum", [&](const at::Tensor& t) { runBlocking("allreduce", allreduceBody(t)); });
  }

  std::unique_ptr<CollectiveWork> allreduceSumAsync(const at::Tensor& tensor) override {
    checkReducible(tensor);
    if (!tensor.device().is_cpu()) {
      throw std::runtime_error(fmt::format("gloo allreduceSum takes CPU tensors, got one on {}; use backend nccl "
                                           "for CUDA",
                                           tensor.device().str()));
    }
    if (!tensor.is_contiguous()) throw std::runtime_error("gloo allreduceSumAsync takes a contiguous tensor");
    if (tensor.numel() == 0) return Communicator::allreduceSumAsync(tensor);
    return enqueue("allreduce", allreduceBody(tensor));
  }

  void barrier() override {
    runBlocking("barrier", [this](uint32_t tag) {
      gloo::BarrierOptions opts(context_);
      opts.setTag(tag);
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

 private:
  // What a queued collective shares with its waiter.
  struct Job {
    uint64_t seq = 0;
    const char* op = "";
    Clock::time_point start;
    std::function<void(uint32_t)> body;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string error;  // empty on success
  };

  class Work final : public CollectiveWork {
   public:
    Work(GlooCommunicator& comm, std::shared_ptr<Job> job) : comm_(comm), job_(std::move(job)) {}
    void wait() override {
      if (!job_) return;
      auto job = std::move(job_);
      std::unique_lock<std::mutex> lock(job->mu);
      job->cv.wait(lock, [&] { return job->done; });
      if (!job->error.empty()) comm_.fail(job->seq, job->op, job->start, job->error);
    }

   private:
    GlooCommunicator& comm_;
    std::shared_ptr<Job> job_;
  };

  void checkRoot(int root) const {
    if (root < 0 || root >= world_) {
      throw std::runtime_error(fmt::format("broadcast root {} is not a rank (world size {})", root, world_));
    }
  }

  // Runs `f` on a contiguous CPU tensor that shares or is copied back to `tensor`.
  template <typename F>
  void inPlace(const at::Tensor& tensor, const char* op, F&& f) {
    if (!tensor.device().is_cpu()) {
      throw std::runtime_error(fmt::format("gloo {} takes CPU tensors, got one on {}; use backend nccl for CUDA",
                                           op, tensor.device().str()));
    }
    if (tensor.numel() == 0) return;
    if (tensor.is_contiguous()) return f(tensor);
    auto dense = tensor.contiguous();
    f(dense);
    tensor.copy_(dense);
  }

  static void checkReducible(const at::Tensor& tensor) {
    switch (tensor.scalar_type()) {
      case at::kFloat: case at::kDouble: case at::kLong: case at::kInt: case at::kByte: case at::kHalf:
      case at::kBFloat16:
        return;
      default:
        throw std::runtime_error(
            fmt::format("gloo allreduceSum: unsupported dtype {}", c10::toString(tensor.scalar_type())));
    }
  }

  std::function<void(uint32_t)> allreduceBody(at::Tensor t) {
    return [this, t = std::move(t)](uint32_t tag) {
      switch (t.scalar_type()) {
        case at::kFloat: return reduce<float>(t, tag);
        case at::kDouble: return reduce<double>(t, tag);
        case at::kLong: return reduce<int64_t>(t, tag);
        case at::kInt: return reduce<int32_t>(t, tag);
        case at::kByte: return reduce<uint8_t>(t, tag);
        default: {
          // Debian's gloo has no half or bf16 sum: reduce in float and round once.
          auto wide = t.to(at::kFloat);  // [n]
          reduce<float>(wide, tag);
          t.copy_(wide);
          return;
        }
      }
    };
  }

  template <typename T>
  void reduce(const at::Tensor& t, uint32_t tag) {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(t.data_ptr<T>(), static_cast<size_t>(t.numel()));
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
    opts.setTag(tag);
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  }

  // Numbers the collective (on the calling thread, in call order) and queues it for the worker.
  std::unique_ptr<CollectiveWork> enqueue(const char* op, std::function<void(uint32_t)> body) {
    auto job = std::make_shared<Job>();
    job->seq = arrive();
    job->op = op;
    job->start = Clock::now();
    job->body = std::move(body);
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      queue_.push_back(job);
    }
    queue_cv_.notify_one();
    return std::make_unique<Work>(*this, std::move(job));
  }

  // A blocking collective: on the calling thread when the worker is idle with nothing queued (the
  // worker cannot start anything meanwhile: collectives are issued from one thread at a time).
  void runBlocking(const char* op, std::function<void(uint32_t)> body) {
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      if (!queue_.empty() || busy_) {
        lock.unlock();
        enqueue(op, std::move(body))->wait();
        return;
      }
      busy_ = true;
    }
    const uint64_t seq = arrive();
    const auto start = Clock::now();
    std::string error = execute(seq, op, body);
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      busy_ = false;
    }
    if (!error.empty()) fail(seq, op, start, error);
  }

  // Runs one collective (inline or on the worker; never both at once); returns its error or "".
  std::string execute(uint64_t seq, const char* op, const std::function<void(uint32_t)>& body) {
    if (!first_failure_.empty()) return "not run: " + first_failure_;
    try {
      body(static_cast<uint32_t>(seq));
      return "";
    } catch (const std::exception& e) {
      const std::string error = stripLocation(e.what());
      first_failure_ = fmt::format("{} #{} failed before it ({})", op, seq, error);
      return error;
    }
  }

  void workerLoop() {
    for (;;) {
      std::shared_ptr<Job> job;
      bool stopping = false;
      {
        std::unique_lock<std::mutex> lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        job = std::move(queue_.front());
        queue_.pop_front();
        stopping = stopping_;
        busy_ = true;
      }
      std::string error = stopping ? "the communicator was destroyed before this collective ran"
                                   : execute(job->seq, job->op, job->body);
      job->body = nullptr;  // releases the tensor before the waiter wakes
      {
        std::lock_guard<std::mutex> lock(queue_mu_);
        busy_ = false;
      }
      {
        std::lock_guard<std::mutex> lock(job->mu);
        job->done = true;
        job->error = std::move(error);
      }
      job->cv.notify_all();
    }
  }

  std::shared_ptr<gloo::Context> context_;
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool busy_ = false;           // a collective is running (inline or on the worker)
  std::string first_failure_;   // only touched by whoever runs collectives, one at a time
  bool stopping_ = false;
  std::thread worker_;  // last: started once the context exists
};

#endif  // LATENTCELL_WITH_GLOO

// ---------------------------------------------------------------------------------------------
// NCCL

#if LATENTCELL_WITH_NCCL

ncclDataType_t ncclType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default:
      throw std::runtime_error(fmt::format("nccl: unsupported dtype {}", c10::toString(type)));
  }
}

// Collectives are queued on a side stream after the caller's stream reaches them, so a bucket's
// all-reduce overlaps the rest of backward; wait() polls the completion event and NCCL's async
// error under the timeout, and aborts the communicator when either goes wrong (an abort is what
// releases the kernels of a collective whose peer is gone). The communicator is non-blocking
// (config.blocking = 0) so that init, too, can time out.
class NcclCommunicator final : public StoreCommunicator {
 public:
  NcclCommunicator(const DistributedEnv& env, const Timeouts& timeouts, c10::intrusive_ptr<c10d::Store> store)
      : StoreCommunicator(env, timeouts, std::move(store), "nccl") {
    const int devices = static_cast<int>(c10::cuda::device_count());
    if (devices == 0) throw std::runtime_error("nccl needs a CUDA device and none is visible; use backend gloo");
    if (env.local_rank >= devices) {
      throw std::runtime_error(fmt::format("local rank {} has no GPU: {} CUDA device(s) visible; start at most {} "
                                           "ranks per node",
                                           env.local_rank, devices, devices));
    }
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    c10::cuda::CUDAGuard guard(device_);
    join("init");
    ncclUniqueId id;
    const std::string id_key = key("unique_id");
    if (rank_ == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      store_->set(id_key, std::vector<uint8_t>(id.internal, id.internal + sizeof(id.internal)));
    } else {
      store_->wait({id_key}, join_timeout_);
      const auto bytes = store_->get(id_key);
      if (bytes.size() != sizeof(id.internal)) throw std::runtime_error("nccl: malformed unique id in the store");
      std::memcpy(id.internal, bytes.data(), bytes.size());
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    settle(ncclCommInitRankConfig(&comm_, world_, id, rank_, &config), 0, "init", Clock::now(), join_timeout_);
    stream_.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_.index()));
  }

  ~NcclCommunicator() override {
    // Abort, not finalize: it never waits for peers, which may be gone.
    if (comm_ != nullptr) ncclCommAbort(comm_);
  }

  c10::DeviceType deviceType() const override { return c10::kCUDA; }
  bool asyncCollectives() const override { return true; }

  void broadcast(const at::Tensor& tensor, int root) override {
    if (root < 0 || root >= world_) {
      throw std::runtime_error(fmt::format("broadcast root {} is not a rank (world size {})", root, world_));
    }
    checkTensor(tensor, "broadcast");
    auto dense = tensor.contiguous();
    launch("broadcast", dense, [&](void* p) {
      return ncclBroadcast(p, p, dense.nbytes(), ncclUint8, root, comm_, stream_->stream());
    })->wait();
    if (!dense.is_same(tensor)) tensor.copy_(dense);
  }

  void allreduceSum(const at::Tensor& tensor) override {
    checkTensor(tensor, "allreduceSum");
    auto dense = tensor.contiguous();
    allreduceSumAsync(dense)->wait();
    if (!dense.is_same(tensor)) tensor.copy_(dense);
  }

  std::unique_ptr<CollectiveWork> allreduceSumAsync(const at::Tensor& tensor) override {
    checkTensor(tensor, "allreduceSumAsync");
    if (!tensor.is_contiguous()) throw std::runtime_error("nccl allreduceSumAsync takes a contiguous tensor");
    const auto type = ncclType(tensor.scalar_type());
    return launch("allreduce", tensor, [&](void* p) {
      return ncclAllReduce(p, p, static_cast<size_t>(tensor.numel()), type, ncclSum, comm_, stream_->stream());
    });
  }

  void barrier() override {
    c10::cuda::CUDAGuard guard(device_);
    auto token = at::zeros({1}, at::TensorOptions().device(device_).dtype(at::kFloat));  // [1]
    allreduceSumAsync(token)->wait();
  }

 private:
  class Work final : public CollectiveWork {
   public:
    Work(NcclCommunicator& comm, uint64_t seq, const char* op, Clock::time_point start,
         std::unique_ptr<c10::cuda::CUDAEvent> done)
        : comm_(comm), seq_(seq), op_(op), start_(start), done_(std::move(done)) {}
    void wait() override {
      if (done_) comm_.waitFor(*done_, seq_, op_, start_);
      done_.reset();
    }

   private:
    NcclCommunicator& comm_;
    uint64_t seq_;
    const char* op_;
    Clock::time_point start_;
    std::unique_ptr<c10::cuda::CUDAEvent> done_;
  };

  void checkTensor(const at::Tensor& tensor, const char* op) const {
    if (tensor.device() != device_) {
      throw std::runtime_error(fmt::format("nccl {} takes tensors on {}, got one on {}", op, device_.str(),
                                           tensor.device().str()));
    }
  }

  template <typename F>
  std::unique_ptr<CollectiveWork> launch(const char* op, const at::Tensor& tensor, F&& call) {
    const uint64_t seq = arrive();
    const auto start = Clock::now();
    c10::cuda::CUDAGuard guard(device_);
    // The side stream starts once the caller's stream has produced the tensor; the allocator must
    // not hand its memory out again before the side stream is done with it.
    c10::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(device_.index()));
    ready.block(*stream_);
    c10::cuda::CUDACachingAllocator::recordStream(tensor.storage().data_ptr(), *stream_);
    settle(call(tensor.data_ptr()), seq, op, start, timeout_);
    auto done = std::make_unique<c10::cuda::CUDAEvent>();
    done->record(*stream_);
    return std::make_unique<Work>(*this, seq, op, start, std::move(done));
  }

  void waitFor(const c10::cuda::CUDAEvent& done, uint64_t seq, const char* op, Clock::time_point start) {
    checkUsable();  // a collective launched before an abort can never finish
    while (!done.query()) {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) abortAndFail(seq, op, start, describe(state));
      if (Clock::now() - start > timeout_) {
        abortAndFail(seq, op, start, fmt::format("timed out after {:.1f} s", seconds(timeout_)));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // A non-blocking communicator answers ncclInProgress until the call has been carried out.
  void settle(ncclResult_t result, uint64_t seq, const char* op, Clock::time_point start, milliseconds limit) {
    while (result == ncclInProgress) {
      if (Clock::now() - start > limit) {
        abortAndFail(seq, op, start, fmt::format("timed out after {:.1f} s", seconds(limit)));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      ncclCommGetAsyncError(comm_, &result);
    }
    if (result != ncclSuccess) abortAndFail(seq, op, start, describe(result));
  }

  std::string describe(ncclResult_t result) const {
    const char* last = comm_ != nullptr ? ncclGetLastError(comm_) : nullptr;
    return fmt::format("{}{}{}", ncclGetErrorString(result), last != nullptr && *last != '\0' ? ": " : "",
                       last != nullptr ? last : "");
  }

  static void check(ncclResult_t result, const char* what) {
    if (result != ncclSuccess) throw std::runtime_error(fmt::format("{}: {}", what, ncclGetErrorString(result)));
  }

  [[noreturn]] void abortAndFail(uint64_t seq, const char* op, Clock::time_point start, const std::string& cause) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    fail(seq, op, start, cause);
  }

  c10::Device device_{c10::kCUDA};
  ncclComm_t comm_ = nullptr;
  std::optional<c10::cuda::CUDAStream> stream_;  // set once the device is known
};

#endif  // LATENTCELL_WITH_NCCL

std::string resolveBackend(const DistributedEnv& env, const std::string& backend) {
  if (backend != "auto" && backend != "gloo" && backend != "nccl" && backend != "single") {
    throw std::runtime_error(
        fmt::format("unknown distributed backend '{}' (use auto, gloo, nccl or single)", backend));
  }
  if (backend == "single" && env.world_size > 1) {
    throw std::runtime_error(fmt::format("backend single runs one process, but the world size is {}", env.world_size));
  }
  if (backend != "auto") return backend;
  if (env.world_size == 1) return "single";
  return torch::cuda::is_available() ? "nccl" : "gloo";
}

}  // namespace

std::unique_ptr<Communicator> makeCommunicator(const DistributedEnv& env, const CommunicatorOptions& options,
                                               c10::intrusive_ptr<c10d::Store> store) {
  const std::string chosen = resolveBackend(env, options.backend);
  if (chosen == "single") {
    return std::make_unique<SingleProcessCommunicator>(torch::cuda::is_available() ? c10::kCUDA : c10::kCPU);
  }
  const Timeouts timeouts{options.timeout, options.join_timeout.count() > 0 ? options.join_timeout : options.timeout};
  if (!store) store = connectStore(env, timeouts.join);
  if (chosen == "gloo") {
#if LATENTCELL_WITH_GLOO
    return std::make_unique<GlooCommunicator>(env, timeouts, std::move(store));
#else
    throw std::runtime_error("this build has no gloo backend: install libgloo-dev and reconfigure");
#endif
  }
#if LATENTCELL_WITH_NCCL
  return std::make_unique<NcclCommunicator>(env, timeouts, std::move(store));
#else
  throw std::runtime_error("this build has no nccl backend: the torch wheel's nvidia/nccl was not found at configure time");
#endif
}

std::unique_ptr<Communicator> makeCommunicator(const DistributedEnv& env, const std::string& backend,
                                               milliseconds timeout) {
  CommunicatorOptions options;
  options.backend = backend;
  options.timeout = timeout;
  return makeCommunicator(env, options);
}

}  // namespace latentcell::train
