// Modeled library size (see LibraryModel.h).
#include "heads/LibraryModel.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/nn/init.h>

#include <stdexcept>

namespace latentcell::heads {

LibraryModel::LibraryModel(int64_t cell_dim) {
  if (cell_dim <= 0)
    throw std::invalid_argument(fmt::format("modeled library size: the per-cell feature width must be positive, got {}", cell_dim));
  posterior = register_module("posterior", torch::nn::Linear(cell_dim, 2));
  core::xavierUniform(posterior);
  prior = register_buffer("prior", at::zeros({2}));
}

void LibraryModel::fitPrior(const at::Tensor& library) {
  auto lib = library.to(at::kDouble).reshape(-1);
  auto log_lib = lib.masked_select(lib > 0).log();  // [cells with counts]
  if (log_lib.numel() == 0)
    throw std::invalid_argument("modeled library size: no training cell has counts; cannot fit the library-size prior");
  // A floor keeps the KL finite when every cell has the same depth (e.g. a simulated panel).
  const double var = log_lib.numel() > 1 ? std::max(log_lib.var(/*unbiased=*/false).item<double>(), 1e-4) : 1e-4;
  torch::NoGradGuard no_grad;
  prior.copy_(at::tensor({log_lib.mean().item<double>(), var}, at::kDouble));
  prior_checked_ = true;
}

LibraryModel::Draw LibraryModel::forward(const at::Tensor& cell_features, bool sample,
                                         std::optional<at::Generator> generator) {
  if (!prior_checked_) {
    if (!(prior[1].item<double>() > 0))
      throw std::runtime_error(
          "modeled library size: the log-normal prior is not fitted; call the head's fitToData on the training "
          "counts before training (a loaded checkpoint restores it)");
    prior_checked_ = true;
  }
  if (!cell_features.defined() || cell_features.dim() != 2 || cell_features.size(1) != posterior->weight.size(1))
    throw std::invalid_argument(fmt::format(
        "modeled library size: HeadContext.cell_features must be [batch, {}], got {}", posterior->weight.size(1),
        cell_features.defined() ? fmt::format("[{}]", fmt::join(cell_features.sizes(), ", ")) : std::string("nothing")));
  auto stats = posterior(cell_features);                      // [batch, 2]
  if (at::isReducedFloatingType(stats.scalar_type())) stats = stats.to(at::kFloat);  // autocast: keep the KL in fp32
  auto prior_mean = prior[0].to(stats.scalar_type());
  auto prior_var = prior[1].to(stats.scalar_type());
  auto mean = prior_mean + stats.select(1, 0);                // [batch]
  auto log_var = at::log(prior_var) + stats.select(1, 1);     // [batch]
  // KL(N(m, s^2) || N(pm, pv)) = 0.5 * (log pv - log s^2 + (s^2 + (m - pm)^2) / pv - 1)
  auto kl = 0.5 * (at::log(prior_var) - log_var + (log_var.exp() + (mean - prior_mean).square()) / prior_var - 1.0);
  Draw draw;
  draw.kl = kl;
  if (sample) {
    auto noise = at::normal(0.0, 1.0, mean.sizes(), generator, mean.options());  // [batch]
    draw.log_library = mean + at::exp(0.5 * log_var) * noise;
  } else {
    draw.log_library = mean;
  }
  return draw;
}

}  // namespace latentcell::heads
