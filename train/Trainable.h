// What the Trainer trains: a module, its loss on the next batch, and its data position.
//
// The trainer knows nothing else about a model (architecture sketch: "a trainable model exposes
// loss(batch) -> LossTerms"). Stage-1 autoencoders, stage-2 priors and the smoke task all
// implement this. The data position is part of the contract because exact resume needs it.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::train {

// Named scalar losses; the first one is optimised, the others are logged.
struct LossTerms {
  std::vector<std::pair<std::string, at::Tensor>> terms;
  const at::Tensor& objective() const { return terms.front().second; }
};

// Mean of named losses over several batches (a validation pass), each batch weighted (e.g. by its
// cells); the names come from the first batch.
class LossMeter {
 public:
  void add(const std::vector<std::pair<std::string, at::Tensor>>& terms, double weight = 1.0);
  LossTerms mean() const;  // empty when nothing was added

 private:
  std::vector<std::pair<std::string, double>> sums_;
  double weight_ = 0;
};

// Serialisable position in the training data (epoch, batch within the epoch, ...).
using DataState = std::map<std::string, int64_t>;

// The DataState key that counts completed passes over the training data (the epoch the next batch
// is drawn from). A Trainable whose data has epochs reports it; trainer.max_epochs requires it.
inline constexpr const char* kEpochKey = "epoch";

class Trainable {
 public:
  virtual ~Trainable() = default;
  virtual torch::nn::Module& module() = 0;
  // Draws the next training batch, advancing the data position, and returns its losses.
  virtual LossTerms trainLoss() = 0;
  // Losses over the validation data (no gradient is taken); empty when there is none.
  virtual LossTerms evalLoss() { return {}; }
  // Cells (examples) in one training batch, for throughput.
  virtual int64_t batchSize() const = 0;
  virtual DataState dataState() const = 0;
  virtual void restoreDataState(const DataState& state) = 0;
};

}  // namespace latentcell::train
