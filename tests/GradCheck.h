// Gradient checks shared by the test binaries: autograd against central finite differences in
// double precision, at a few random entries of each tensor (a full Jacobian is too slow for the
// attention blocks and adds nothing a random sample of entries would miss).
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::test {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Checks the gradient of the scalar `loss()` with respect to every tensor in `wrt`, at up to
// `samples` random entries of each, against central differences with step 1e-6.
inline void expectLossGradientsMatch(const std::function<torch::Tensor()>& loss, const NamedTensors& wrt,
                                     int64_t samples) {
  constexpr double kEps = 1e-6;
  for (const auto& [name, t] : wrt)
    if (t.grad().defined()) t.grad().zero_();
  loss().backward();
  for (const auto& [name, t] : wrt) {
    ASSERT_TRUE(t.grad().defined()) << name << " received no gradient";
    auto grad = t.grad().reshape(-1);
    auto flat = t.data().view(-1);  // shares storage with t
    auto picks = torch::randperm(flat.numel()).narrow(0, 0, std::min<int64_t>(flat.numel(), samples));
    for (int64_t k = 0; k < picks.numel(); ++k) {
      const int64_t i = picks[k].item<int64_t>();
      torch::NoGradGuard ng;
      const double orig = flat[i].item<double>();
      flat[i] = orig + kEps;
      const double up = loss().item<double>();
      flat[i] = orig - kEps;
      const double down = loss().item<double>();
      flat[i] = orig;
      const double numeric = (up - down) / (2 * kEps);
      EXPECT_NEAR(grad[i].item<double>(), numeric, 1e-6 + 1e-5 * std::abs(numeric)) << name << "[" << i << "]";
    }
  }
}

// The same for a tensor-valued `f`, through L = sum(f() * R) with R a fixed random tensor, so that
// every output entry contributes with its own weight.
inline void expectGradientsMatch(const std::function<torch::Tensor()>& f, const NamedTensors& wrt,
                                 int64_t samples) {
  auto weights = torch::randn_like(f());
  expectLossGradientsMatch([&] { return (f() * weights).sum(); }, wrt, samples);
}

// `inputs` followed by the module's named parameters.
inline NamedTensors withParameters(torch::nn::Module& m, NamedTensors inputs = {}) {
  for (auto& item : m.named_parameters()) inputs.emplace_back(item.key(), item.value());
  return inputs;
}

// Parameters to double and away from their initial values, so that zero-initialised layers
// (adaLN-Zero, zero biases) do not make the check trivial.
inline void randomiseDouble(torch::nn::Module& m, double scale = 0.4) {
  torch::NoGradGuard ng;
  m.to(torch::kDouble);
  for (auto& p : m.parameters()) p.copy_(scale * torch::randn_like(p));
}

}  // namespace latentcell::test
