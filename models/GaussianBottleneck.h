// The Gaussian bottleneck of a VAE (notes sec. 2; scLDM, ExpressionVAE's continuous variant).
//
// One linear layer maps each latent token to the mean and log-variance of q(z | x); training
// draws z = mu + exp(logvar / 2) * eps (the reparameterisation trick), evaluation returns mu. The
// auxiliary loss is beta * KL(q || N(0, I)), the KL summed over tokens and dimensions and averaged
// over cells (the heads' reduction, so beta means the same with every head; ExpressionVAE uses
// 2e-6, scLDM sweeps {0, 1e-5}). The deterministic mode is the public scLDM code's: a mean-only
// projection with no KL and no sampling, i.e. a plain autoencoder with the same interface.
#pragma once

#include "models/Bottleneck.h"

#include <torch/nn/modules/linear.h>

namespace latentcell::models {

struct GaussianBottleneckOptions {
  int64_t in_dim = 0;
  int64_t latent_dim = 0;  // 0 = in_dim
  double beta = 0.0;
  bool deterministic = false;
};

class GaussianBottleneck : public Bottleneck {
 public:
  explicit GaussianBottleneck(const GaussianBottleneckOptions& options);

  // Mean and log-variance [batch, tokens, latent_dim] (log-variance undefined when deterministic).
  std::pair<at::Tensor, at::Tensor> moments(const at::Tensor& h);

  BottleneckOutput forward(const at::Tensor& h) override;
  at::Tensor decodeInput(const at::Tensor& latent) override;
  int64_t outputDim() const override { return options_.latent_dim; }
  int64_t latentDim() const override { return options_.latent_dim; }
  const char* kind() const override { return "gaussian"; }

  const GaussianBottleneckOptions& options() const { return options_; }

  torch::nn::Linear proj{nullptr};  // in_dim -> 2 * latent_dim (mean, log-variance), or latent_dim

 private:
  GaussianBottleneckOptions options_;
};

// KL(N(mu, exp(logvar)) || N(0, I)) per cell: 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) over every
// dimension but the first. mu, logvar [batch, ...] -> [batch].
at::Tensor klToStandardNormal(const at::Tensor& mu, const at::Tensor& logvar);

}  // namespace latentcell::models
