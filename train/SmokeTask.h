// The smoke task: a small MCAB set model trained on random data through the full Trainer, so a
// fresh install shows a loss going down in seconds with nothing but the binary, and the training
// engine (checkpoints, exact resume, accumulation) has a cheap model to be tested on.
//
// Each example is a random set of up to `set_size` feature vectors (random amounts of padding);
// the model pools it with an MCAB (pseudo-inputs) into latent tokens, runs a transformer block
// and predicts two permutation-invariant statistics of the set: the mean of feature 0 and the
// max of feature 1. The targets depend on the whole set, so the loss only falls if masking,
// pooling and attention work together. Batch b is drawn from a generator seeded by (seed, b), so
// the data position is one integer. By default every batch is new; with data.epoch_batches the
// same batches come round again every epoch, and the data position also counts epochs.
#pragma once

#include "core/Config.h"
#include "train/Trainer.h"

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::train {

struct SmokeModelConfig : core::ConfigSection {
  int64_t dim = 32;
  int64_t heads = 4;
  int64_t latent_tokens = 4;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct SmokeDataConfig : core::ConfigSection {
  int64_t set_size = 16;
  int64_t features = 8;
  int64_t batch_size = 32;
  int64_t epoch_batches = 0;  // batches per rank and epoch; 0 = an endless stream without epochs
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct SmokeConfig : core::ConfigSection {
  std::string task = "smoke";
  int64_t seed = 0;
  std::string device = "auto";
  std::string run_dir = "runs/smoke";
  SmokeModelConfig model;
  SmokeDataConfig data;
  TrainerConfig trainer;
  void visit(core::ConfigVisitor& v) override;
};

// Trains (or, with resume, continues) the smoke model; returns the trainer's summary. The command
// line is recorded in the checkpoints' run metadata.
TrainSummary runSmokeTask(const SmokeConfig& config, bool resume, const std::vector<std::string>& command_line = {});

}  // namespace latentcell::train
