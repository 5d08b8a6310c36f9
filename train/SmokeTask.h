// The smoke task: a small MCAB set model trained on random data, so a fresh install can show a
// loss going down in seconds with nothing but the binary.
//
// Each example is a random set of up to `set_size` feature vectors (random amounts of padding);
// the model pools it with an MCAB (pseudo-inputs) into latent tokens, runs a transformer block
// and predicts two permutation-invariant statistics of the set: the mean of feature 0 and the
// max of feature 1. The targets depend on the whole set, so the loss only falls if masking,
// pooling and attention work together.
#pragma once

#include "core/Config.h"

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
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct SmokeOptimConfig : core::ConfigSection {
  double lr = 3e-3;
  int64_t steps = 200;
  int64_t batch_size = 32;
  int64_t log_every = 20;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct SmokeConfig : core::ConfigSection {
  std::string task = "smoke";
  int64_t seed = 0;
  std::string device = "auto";
  std::string out_dir;  // when set: resolved config and final weights are written there
  SmokeModelConfig model;
  SmokeDataConfig data;
  SmokeOptimConfig optim;
  void visit(core::ConfigVisitor& v) override;
};

struct SmokeResult {
  std::vector<double> losses;  // one per logged step (mean over the logging window)
};

SmokeResult runSmokeTask(const SmokeConfig& config);

}  // namespace latentcell::train
