// The training engine shared by every stage (flashlight-style Trainer: trainStep, evalStep,
// saveCheckpoint). It owns the optimizer (AdamW, Adam or SGD; no weight decay on biases, norms and
// embeddings), the learning-rate schedule, gradient clipping and accumulation, the EMA of the
// weights, bf16 autocast, non-finite-loss handling, metrics (JSONL and TensorBoard), validation with
// the best-K checkpoints kept, limits on steps, epochs and wall time, and checkpoints with exact
// resume (weights, optimizer, EMA, RNG, data position and the best-K ranking).
#pragma once

#include "core/Config.h"
#include "train/Checkpoint.h"
#include "train/Trainable.h"

#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace latentcell::train {

class Communicator;
class Ema;
class GradientReducer;
class TensorBoardWriter;

struct OptimizerConfig : core::ConfigSection {
  std::string name = "adamw";
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  double momentum = 0.9;  // sgd
  bool decay_norms_biases_embeddings = false;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct ScheduleConfig : core::ConfigSection {
  std::string kind = "constant";
  int64_t warmup_steps = 0;
  double min_ratio = 0.0;
  double decay_fraction = 0.2;  // wsd
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct EmaConfig : core::ConfigSection {
  bool enabled = false;
  double decay = 0.999;
  int64_t every = 1;
  int64_t start = 0;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct DistributedConfig : core::ConfigSection {
  std::string backend = "auto";  // auto (nccl on CUDA, gloo on CPU), gloo, nccl
  double timeout_s = 600;        // bound on every collective; a lost rank fails the job after it
  double bucket_mb = 25;         // gradient all-reduce bucket size
  bool overlap = true;           // all-reduce full buckets while backward still runs
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct TrainerConfig : core::ConfigSection {
  int64_t max_steps = 1000;
  int64_t max_epochs = 0;      // 0 = no epoch limit (needs a Trainable that reports kEpochKey)
  double max_time_s = 0;       // 0 = no wall-time limit (data parallel: checked every log_every steps)
  int64_t accumulate = 1;      // micro-batches per optimizer step
  double grad_clip = 0;        // max global grad norm; 0 = off
  bool bf16 = false;           // autocast to bf16 (CUDA, or CPUs with bf16 units)
  int64_t log_every = 50;
  int64_t eval_every = 0;      // 0 = no validation
  std::string eval_metric;     // validation term that ranks checkpoints; "" = the first (objective)
  std::string eval_mode = "min";  // min or max: which direction of eval_metric is better
  int64_t keep_best = 1;       // best checkpoints by eval_metric kept beside the last keep_last
  int64_t checkpoint_every = 0;  // 0 = only at the end
  int64_t keep_last = 3;
  int64_t max_nonfinite = 10;  // skipped non-finite losses before the run stops
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  EmaConfig ema;
  DistributedConfig distributed;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct TrainSummary {
  int64_t steps = 0;            // optimizer steps taken in total (resumed runs included)
  std::string stopped_by;       // the limit that ended the run: max_steps, max_epochs or max_time_s
  double first_loss = 0;        // mean objective of the first logging window of this process
  double last_loss = 0;         // mean objective of the last logging window
  int64_t nonfinite_skipped = 0;
  std::string last_checkpoint;
  BestCheckpoints best;         // the best-K ranking at the end (empty without validation)
};

class Trainer {
 public:
  // run_dir receives checkpoints/, metrics.jsonl and config.yaml (the resolved config).
  // With a communicator of world size > 1 the trainer is data parallel: rank 0's weights are
  // broadcast, the ranks must agree on config and weights, gradients are averaged every step, and
  // only rank 0 writes files. The Trainable must give each rank its own share of the data.
  Trainer(const TrainerConfig& config, Trainable& model, const c10::Device& device,
          std::string run_dir, std::string resolved_config_yaml, Communicator* comm = nullptr);
  ~Trainer();

  // Recorded in each checkpoint's meta.yaml (the process's argv, as the user typed it).
  void setCommandLine(std::vector<std::string> argv) { command_line_ = std::move(argv); }

  // Loads the checkpoint `latest` points at, if any; returns whether it resumed.
  bool resume();
  TrainSummary fit();

  // One optimizer step (accumulate micro-batches); returns the mean objective, NaN if skipped.
  double trainStep();
  // Validation losses, averaged over the ranks when data parallel.
  LossTerms evalStep();
  std::string saveCheckpoint();
  void loadCheckpoint(const std::string& dir);

  int64_t step() const { return step_; }
  const Ema* ema() const { return ema_.get(); }
  const BestCheckpoints& best() const { return best_; }

 private:
  void writeMetrics(const std::string& json_line);
  void writeScalar(const std::string& tag, double value);
  // Validates, logs the losses and enters them in the best-K ranking; returns whether this step
  // entered it (and so needs a checkpoint).
  bool validate(double elapsed_s);
  // The Trainable's epoch (kEpochKey of its data position), if it reports one.
  std::optional<int64_t> epoch() const;
  // Whether max_time_s is over; data parallel, all ranks get rank 0's answer at the same steps.
  bool timeLimitReached(double elapsed_s);

  TrainerConfig config_;
  Trainable& model_;
  c10::Device device_;
  std::string run_dir_;
  std::string resolved_config_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<at::Tensor> params_;  // the optimizer's parameters, for the gradient norm
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<GradientReducer> reducer_;  // data parallel only
  bool writer_ = true;                         // rank 0 writes checkpoints and metrics
  int64_t world_ = 1;                          // ranks, for global throughput
  Communicator* comm_ = nullptr;               // data parallel only
  CheckpointManager checkpoints_;
  std::ofstream metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // RUN_DIR/tensorboard, opened on first use
  int64_t step_ = 0;
  int64_t nonfinite_ = 0;
  int64_t saved_step_ = -1;  // step of the checkpoint last written or loaded
  std::string last_checkpoint_;
  BestCheckpoints best_;                  // the best-K ranking so far, saved in every checkpoint
  bool warned_no_validation_ = false;
  std::vector<std::string> command_line_;
};

}  // namespace latentcell::train
