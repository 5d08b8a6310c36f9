// Gaussian bottleneck (see GaussianBottleneck.h).
#include "models/GaussianBottleneck.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::models {

GaussianBottleneck::GaussianBottleneck(const GaussianBottleneckOptions& options) : options_(options) {
  if (options_.in_dim <= 0)
    throw std::invalid_argument(fmt::format("gaussian bottleneck: input width must be positive, got {}", options_.in_dim));
  if (options_.latent_dim == 0) options_.latent_dim = options_.in_dim;
  if (options_.latent_dim < 0)
    throw std::invalid_argument(fmt::format("gaussian bottleneck: latent_dim must be positive, got {}", options_.latent_dim));
  if (options_.beta < 0) throw std::invalid_argument(fmt::format("gaussian bottleneck: beta must be >= 0, got {}", options_.beta));
  if (options_.deterministic && options_.beta != 0)
    throw std::invalid_argument("gaussian bottleneck: a deterministic (mean-only) bottleneck has no KL; set beta to 0");
  const int64_t out = options_.deterministic ? options_.latent_dim : 2 * options_.latent_dim;
  proj = register_module("proj", torch::nn::Linear(options_.in_dim, out));
  core::xavierUniform(proj);
}

std::pair<at::Tensor, at::Tensor> GaussianBottleneck::moments(const at::Tensor& h) {
  checkInput(h, options_.in_dim);
  auto out = proj(h);  // [batch, tokens, 2 * latent_dim] or [batch, tokens, latent_dim]
  if (options_.deterministic) return {out, at::Tensor()};
  auto parts = out.chunk(2, -1);
  return {parts[0], parts[1]};  // [batch, tokens, latent_dim] each
}

BottleneckOutput GaussianBottleneck::forward(const at::Tensor& h) {
  auto [mu, logvar] = moments(h);
  BottleneckOutput out;
  out.latent = mu;
  if (options_.deterministic) {
    out.z = mu;
    out.loss = at::zeros({}, mu.options());
    return out;
  }
  out.z = is_training() ? mu + at::exp(0.5 * logvar) * at::randn_like(mu) : mu;
  auto kl = klToStandardNormal(mu, logvar).mean();
  out.loss = options_.beta * kl;
  out.terms.emplace_back("kl", kl);
  return out;
}

at::Tensor GaussianBottleneck::decodeInput(const at::Tensor& latent) {
  checkInput(latent, options_.latent_dim);
  return latent;
}

at::Tensor klToStandardNormal(const at::Tensor& mu, const at::Tensor& logvar) {
  auto elementwise = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar);  // [batch, ...]
  return elementwise.reshape({mu.size(0), -1}).sum(1);                    // [batch]
}

}  // namespace latentcell::models
