// Autoregressive prior over FSQ codes (see ArPrior.h).
#include "priors/ArPrior.h"

#include "priors/Sampling.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <stdexcept>

namespace latentcell::priors {
namespace {

ConditionEncoderOptions conditioningOptions(const PriorConfig& c) {
  return ConditionEncoderOptions{c.backbone.dim, /*timestep=*/false, 1.0, c.conditioning.dropout,
                                 parseDropoutMode(c.conditioning.dropout_mode)};
}

}  // namespace

ArPrior::ArPrior(const PriorConfig& config, int64_t tokens, int64_t codebook,
                 const std::vector<ConditionColumnSpec>& columns)
    : Prior(LatentSpec{LatentKind::Codes, tokens, 0, codebook}, conditioningOptions(config), columns),
      config_(config.ar) {
  if (tokens <= 0 || codebook <= 1) throw std::invalid_argument("ArPrior: tokens must be positive and codebook > 1");
  const auto& b = config.backbone;
  backbone = register_module(
      "backbone", DitBackbone(DitBackboneOptions{b.dim, b.depth, b.heads, b.mlp_ratio, b.dropout, /*in_dim=*/0,
                                                 /*vocab=*/codebook + 1, /*positions=*/tokens, /*out_dim=*/codebook,
                                                 /*causal=*/true}));
}

at::Tensor ArPrior::logits(const at::Tensor& codes, const at::Tensor& ids, const at::Tensor& null) {
  checkLatents(codes, "codes");
  const int64_t batch = codes.size(0);
  auto bos = at::full({batch, 1}, bosId(), codes.options());
  auto inputs = at::cat({bos, codes.narrow(1, 0, spec_.tokens - 1)}, 1);  // [batch, L]
  auto c = conditions(ids, null);                                           // [batch, dim]
  return backbone(inputs, c);                                               // [batch, L, codebook]
}

NamedLosses ArPrior::lossAt(const at::Tensor& codes, const at::Tensor& ids, const at::Tensor& null) {
  auto out = logits(codes, ids, null);  // [batch, L, K]
  auto nll = at::cross_entropy_loss(out.reshape({-1, spec_.codebook}).to(at::kFloat), codes.reshape({-1}));
  return {{"loss", nll}};
}

NamedLosses ArPrior::loss(const PriorBatch& batch, std::optional<at::Generator> gen) {
  checkLatents(batch.latents, "codes");
  auto null = conditions->sampleDropout(batch.latents.size(0), device(), gen);
  return lossAt(batch.latents, batch.conditions, null);
}

SamplerOptions ArPrior::defaultSamplerOptions() const {
  SamplerOptions o;
  o.temperature = config_.temperature;
  o.top_k = config_.top_k;
  o.kv_cache = config_.kv_cache;
  return o;
}

at::Tensor ArPrior::sample(const SampleRequest& request, int64_t n, const SamplerOptions& options, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  auto ids = requestConditions(request, n);
  auto c = conditions(ids);  // [n, dim]
  const int64_t length = spec_.tokens;
  auto long_opts = at::TensorOptions().dtype(at::kLong).device(device());
  auto bos = at::full({n, 1}, bosId(), long_opts);
  auto codes = at::empty({n, 0}, long_opts);

  std::vector<core::KvCache> caches = backbone->makeCaches();
  at::Tensor newest = bos;  // [n, 1], the token fed at the current position
  for (int64_t l = 0; l < length; ++l) {
    at::Tensor step_logits;
    if (options.kv_cache) {
      auto out = backbone->run(backbone->embed(newest, l), c, {}, &caches);  // [n, 1, K]
      step_logits = out.select(1, 0);
    } else {
      auto out = backbone(at::cat({bos, codes}, 1), c);                      // [n, l + 1, K]
      step_logits = out.select(1, l);
    }
    auto next = sampleCategorical(step_logits, options.temperature, options.top_k, gen);  // [n]
    codes = at::cat({codes, next.unsqueeze(1)}, 1);                                        // [n, l + 1]
    newest = next.unsqueeze(1);
  }
  last_evaluations_ = length;
  return codes;
}

}  // namespace latentcell::priors
