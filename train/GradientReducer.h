// Data-parallel gradient averaging for one module replica per rank (a small, C++-only stand-in
// for DDP's Reducer, which is not meant for use outside Python).
//
// Use: construct after the module is on its device; broadcastParameters() once at start, then
// checkReplicasAgree(); every step, after the last backward, synchronize() before clipping and the
// optimizer step. With gradient accumulation, call prepareForBackward() right before the LAST
// micro-batch's backward only (earlier micro-batches accumulate locally, as DDP's no_sync).
//
// Gradients are flattened into buckets of about `bucket_bytes` (parameters in reverse registration
// order, which is roughly the order backward produces them; one dtype and device per bucket),
// each bucket is sum-all-reduced, divided by the world size and copied back. What overlaps: with a
// backend whose collectives are asynchronous (nccl on a side stream, gloo on its worker thread),
// prepareForBackward() arms post-accumulation hooks that launch a bucket's all-reduce as soon as
// its last gradient is accumulated, in bucket order, while backward continues; synchronize()
// launches the rest and waits. With options.overlap off (or a synchronous backend) the hooks stay
// off and every bucket is reduced in synchronize().
//
// A parameter without a gradient on a rank (unused in its step) contributes zeros. Each bucket
// also carries one "used" flag per parameter, so a parameter unused on every rank keeps an
// undefined gradient (the optimizers skip it), exactly as in a single process.
#pragma once

#include "train/Communicator.h"

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace latentcell::train {

struct ReducerOptions {
  int64_t bucket_bytes = 25 * 1024 * 1024;
  bool overlap = true;  // launch buckets from backward hooks when the backend is asynchronous
};

class GradientReducer {
 public:
  GradientReducer(torch::nn::Module& module, Communicator& comm, ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Copies rank 0's parameters and buffers to every rank.
  void broadcastParameters();
  // Arms the overlap hooks for the next backward (a no-op for synchronous backends).
  void prepareForBackward();
  // Averages every gradient over the ranks; call after the last backward of a step.
  void synchronize();

  int64_t numBuckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Buckets launched so far in this step (by the hooks during backward, before synchronize()).
  int64_t launchedBuckets() const { return static_cast<int64_t>(next_launch_); }

 private:
  struct Bucket {
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // element offset of each parameter's gradient in `flat`
    int64_t numel = 0;             // gradient elements; the per-parameter used flags follow
    at::Tensor flat;               // [numel + params.size()]
    size_t pending = 0;            // parameters whose gradient has not arrived in this backward
    std::unique_ptr<CollectiveWork> work;  // set while an asynchronous reduction is in flight
    bool launched = false;
  };

  void onGradient(size_t param);
  void launch(Bucket& bucket, bool async);
  void launchReadyInOrder();
  void resetStep();

  torch::nn::Module& module_;
  Communicator& comm_;
  ReducerOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;  // param index -> bucket index
  std::vector<Bucket> buckets_;
  std::vector<char> arrived_;      // per parameter: its gradient arrived in this armed backward
  struct Hooks;  // the gradient accumulators and their post-hooks (autograd internals)
  std::unique_ptr<Hooks> hooks_;
  std::mutex mu_;  // hooks run on autograd's device threads
  bool armed_ = false;
  size_t next_launch_ = 0;
  std::string late_gradient_;  // set when a gradient arrives after its bucket was launched
};

// Startup check: every rank compares a hash of its resolved config and a checksum of its
// parameters and buffers (after broadcastParameters) with rank 0's, and throws one line naming
// the ranks that differ.
void checkReplicasAgree(Communicator& comm, const std::string& resolved_config, torch::nn::Module& module);

}  // namespace latentcell::train
