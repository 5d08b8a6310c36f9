// EMA of weights (see Ema.h).
#include "train/Ema.h"

#include "core/StateDict.h"

#include <torch/types.h>

#include <stdexcept>
#include <unordered_map>

namespace latentcell::train {

Ema::Ema(torch::nn::Module& module, double decay, int64_t every, int64_t start)
    : module_(module), decay_(decay), every_(every), start_(start) {
  // The live handles are resolved once: update() runs every step and must not rebuild names.
  std::unordered_map<std::string, at::Tensor> live;
  for (const auto& p : module_.named_parameters()) live.emplace(p.key(), p.value());
  for (const auto& b : module_.named_buffers()) live.emplace(b.key(), b.value());
  for (auto& [name, t] : core::stateDict(module_)) {
    shadow_.emplace_back(name, t.detach().clone());
    live_.push_back(live.at(name));
  }
}

void Ema::update(int64_t step) {
  const bool copy = step <= start_;
  if (!copy && step % every_ != 0) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shadow_.size(); ++i) {
    auto& avg = shadow_[i].second;
    const auto& w = live_[i];
    if (copy || !w.is_floating_point()) {
      avg.copy_(w);
    } else {
      avg.mul_(decay_).add_(w, 1.0 - decay_);
    }
  }
}

void Ema::load(const std::vector<std::pair<std::string, at::Tensor>>& weights) {
  if (weights.size() != shadow_.size()) {
    throw std::runtime_error("EMA weights in the checkpoint do not match the model (" +
                             std::to_string(weights.size()) + " tensors, model has " +
                             std::to_string(shadow_.size()) + ")");
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shadow_.size(); ++i) {
    if (weights[i].first != shadow_[i].first) {
      throw std::runtime_error("EMA weights in the checkpoint do not match the model: '" +
                               weights[i].first + "' where '" + shadow_[i].first + "' was expected");
    }
    shadow_[i].second.copy_(weights[i].second);
  }
}

}  // namespace latentcell::train
