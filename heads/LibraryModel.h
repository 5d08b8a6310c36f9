// A modeled library size: a log-normal latent per cell (scVI's l, the reconstruction benchmark
// paper's "modeled" mode, App. A.2.2 eq. 15-16).
//
// The posterior q(log l | cell) = N(m, s^2) is one linear layer on a per-cell feature vector
// (the paper's "lightweight one-layer head"); the prior N(mean, var) of log l is fitted on the
// training cells and kept as a buffer, so it travels with the checkpoint. The layer predicts the
// posterior relative to the prior (m = mean + a, log s^2 = log var + b), so training starts from the
// prior instead of from l = 1. The KL to that prior is
// the extra term of eq. 16. Training draws l with the reparameterisation trick; evaluation uses
// the posterior mean, so held-out losses and mean predictions are deterministic.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <optional>

namespace latentcell::heads {

class LibraryModel : public torch::nn::Module {
 public:
  explicit LibraryModel(int64_t cell_dim);

  // Sets the prior to the mean and variance of log library size over `library` [cells]
  // (cells with an empty library are left out). Throws std::invalid_argument when no cell has counts.
  void fitPrior(const at::Tensor& library);

  struct Draw {
    at::Tensor log_library;  // [batch]
    at::Tensor kl;           // [batch] KL(q(log l | cell) || prior)
  };
  // cell_features [batch, cell_dim]. `sample` draws log l from the posterior (with `generator`
  // when given), otherwise takes its mean. Throws std::runtime_error when the prior was never fitted.
  Draw forward(const at::Tensor& cell_features, bool sample, std::optional<at::Generator> generator = std::nullopt);

  torch::nn::Linear posterior{nullptr};  // cell_dim -> 2: offsets of the mean and log-variance of log l
  at::Tensor prior;                      // [2] buffer: mean and variance of log l; variance 0 = not fitted

 private:
  bool prior_checked_ = false;
};

}  // namespace latentcell::heads
