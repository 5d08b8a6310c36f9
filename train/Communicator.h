// Collective communication for data-parallel training, behind one small interface.
//
// Ranks meet through a c10d::TCPStore (rank 0 hosts it, or the launcher does when
// TORCHELASTIC_USE_AGENT_STORE=True, as torchrun and launchLocal set). Backends:
//   single  world size 1, every collective a no-op;
//   gloo    CPU tensors, Debian's libgloo driven directly (the wheel ships no gloo headers, so
//           c10d's ProcessGroupGloo cannot be compiled against safely); collectives run in call
//           order on a worker thread, so allreduceSumAsync overlaps the caller's compute;
//   nccl    CUDA tensors, NCCL driven directly (unique id exchanged through the store).
// Every collective runs under the configured timeout. When one fails, the rank reads every rank's
// progress (published to the store by a background thread) and names the ranks that did not arrive
// or stopped beating; the communicator then refuses further collectives.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace c10d {
class Store;
}

namespace latentcell::train {

// Where this process sits in the job.
struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // a launcher hosts the store at master_addr:master_port
  int restart_count = 0;     // torchrun restarts; namespaces the store keys of each attempt
  std::string source = "none";  // "torchrun", "slurm" or "none" (one process)
};

// Torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) win
// over SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE, SLURM_JOB_NODELIST);
// with neither, one process. Inconsistent values throw one line naming the variable.
DistributedEnv parseDistributedEnv(const std::map<std::string, std::string>& vars);
DistributedEnv readDistributedEnv();
// The first host of a SLURM node list: "node[01-04]" -> "node01", "a,b" -> "a".
std::string firstSlurmHost(const std::string& nodelist);

// A collective in flight; wait() returns when it finished (throws on failure or timeout).
class CollectiveWork {
 public:
  virtual ~CollectiveWork() = default;
  virtual void wait() = 0;
};

// Collectives are numbered in call order, so every rank must call the same collectives in the
// same order, one at a time (from any one thread at a time).
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  virtual std::string name() const = 0;
  // Where the tensors handed to the collectives must live (kCPU for gloo, kCUDA for nccl).
  virtual c10::DeviceType deviceType() const = 0;

  // In place: every rank ends with root's values.
  virtual void broadcast(const at::Tensor& tensor, int root) = 0;
  // In place: every rank ends with the element-wise sum over the ranks.
  virtual void allreduceSum(const at::Tensor& tensor) = 0;
  // Starts allreduceSum; backends without asyncCollectives() finish it before returning.
  virtual std::unique_ptr<CollectiveWork> allreduceSumAsync(const at::Tensor& tensor);
  // Whether allreduceSumAsync returns before the reduction is done (so it can overlap compute).
  virtual bool asyncCollectives() const { return false; }
  // Concatenation of every rank's values in rank order; each rank passes the same length.
  virtual std::vector<int64_t> allgather(const std::vector<int64_t>& values) = 0;
  virtual std::vector<double> allgather(const std::vector<double>& values) = 0;
  virtual void barrier() = 0;
};

class SingleProcessCommunicator final : public Communicator {
 public:
  explicit SingleProcessCommunicator(c10::DeviceType device_type = c10::kCPU) : device_type_(device_type) {}
  int rank() const override { return 0; }
  int worldSize() const override { return 1; }
  std::string name() const override { return "single"; }
  c10::DeviceType deviceType() const override { return device_type_; }
  void broadcast(const at::Tensor&, int) override {}
  void allreduceSum(const at::Tensor&) override {}
  std::vector<int64_t> allgather(const std::vector<int64_t>& values) override { return values; }
  std::vector<double> allgather(const std::vector<double>& values) override { return values; }
  void barrier() override {}

 private:
  c10::DeviceType device_type_;
};

struct CommunicatorOptions {
  std::string backend = "auto";  // auto (nccl with CUDA, else gloo; single for one process), gloo, nccl, single
  std::chrono::milliseconds timeout = std::chrono::minutes(10);  // bounds every collective
  // Bounds connecting to the store and waiting for every rank at start, which ranks reach at
  // different speeds; 0 means `timeout`.
  std::chrono::milliseconds join_timeout{0};
};

// The rendezvous store: rank 0 hosts a TCPStore at master_addr:master_port (unless a launcher
// does), every other rank connects, retrying until `timeout`.
c10::intrusive_ptr<c10d::Store> connectStore(const DistributedEnv& env, std::chrono::milliseconds timeout);

// Blocks until every rank has joined, or throws naming the missing ranks. Without `store`, one is
// connected with connectStore (not needed for backend single).
std::unique_ptr<Communicator> makeCommunicator(const DistributedEnv& env, const CommunicatorOptions& options,
                                               c10::intrusive_ptr<c10d::Store> store = {});
// The same with join_timeout = timeout.
std::unique_ptr<Communicator> makeCommunicator(const DistributedEnv& env, const std::string& backend,
                                               std::chrono::milliseconds timeout);

}  // namespace latentcell::train
