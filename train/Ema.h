// Exponential moving average of a module's parameters (and a copy of its buffers).
//
//   ema = decay * ema + (1 - decay) * param, every `every` steps from step `start`;
//   before `start` the average tracks the weights exactly, as DiT and scLDM priors do.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::train {

class Ema {
 public:
  Ema(torch::nn::Module& module, double decay, int64_t every = 1, int64_t start = 0);
  // Call after each optimizer step with its 1-based number.
  void update(int64_t step);
  // The averaged weights under the module's state-dict names.
  const std::vector<std::pair<std::string, at::Tensor>>& weights() const { return shadow_; }
  void load(const std::vector<std::pair<std::string, at::Tensor>>& weights);

 private:
  torch::nn::Module& module_;
  double decay_;
  int64_t every_, start_;
  std::vector<std::pair<std::string, at::Tensor>> shadow_;
  std::vector<at::Tensor> live_;  // the module's own tensors, in shadow_'s order (looked up once)
};

}  // namespace latentcell::train
