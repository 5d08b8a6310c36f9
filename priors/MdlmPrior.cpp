// Masked discrete diffusion prior (see MdlmPrior.h).
#include "priors/MdlmPrior.h"

#include "priors/Sampling.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <limits>
#include <stdexcept>

namespace latentcell::priors {
namespace {

ConditionEncoderOptions conditioningOptions(const PriorConfig& c) {
  return ConditionEncoderOptions{c.backbone.dim, c.mdlm.time_conditioning, c.mdlm.time_scale, c.conditioning.dropout,
                                 parseDropoutMode(c.conditioning.dropout_mode)};
}

}  // namespace

MdlmPrior::MdlmPrior(const PriorConfig& config, int64_t tokens, int64_t codebook,
                     const std::vector<ConditionColumnSpec>& columns)
    : Prior(LatentSpec{LatentKind::Codes, tokens, 0, codebook}, conditioningOptions(config), columns),
      config_(config.mdlm) {
  if (tokens <= 0 || codebook <= 1) throw std::invalid_argument("MdlmPrior: tokens must be positive and codebook > 1");
  const auto& b = config.backbone;
  backbone = register_module(
      "backbone", DitBackbone(DitBackboneOptions{b.dim, b.depth, b.heads, b.mlp_ratio, b.dropout, /*in_dim=*/0,
                                                 /*vocab=*/codebook + 1, /*positions=*/tokens, /*out_dim=*/codebook,
                                                 /*causal=*/false}));
}

at::Tensor MdlmPrior::logits(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& null) {
  auto c = config_.time_conditioning ? conditions(ids, null, t) : conditions(ids, null);  // [batch, dim]
  return backbone(z, c);                                                                  // [batch, L, K]
}

at::Tensor MdlmPrior::logProbs(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& null) {
  auto log_p = at::log_softmax(logits(z, t, ids, null).to(at::kFloat), -1);  // [batch, L, K]
  auto unmasked = z.ne(maskId());                                            // [batch, L]
  // A copied token: 0 at the token itself, -inf elsewhere (the mask id never occurs here).
  auto own = at::one_hot(z.clamp_max(spec_.codebook - 1), spec_.codebook).to(at::kBool);  // [batch, L, K]
  auto copied = at::zeros_like(log_p).masked_fill(own.logical_not(), -std::numeric_limits<float>::infinity());
  return at::where(unmasked.unsqueeze(-1), copied, log_p);
}

at::Tensor MdlmPrior::sampleTimes(int64_t batch, std::optional<at::Generator> gen) const {
  auto u = uniform({batch}, device(), gen);  // [batch]
  if (config_.antithetic) {
    auto offset = at::arange(batch, u.options()) / static_cast<double>(batch);
    u = at::fmod(u / static_cast<double>(batch) + offset, 1.0);
  }
  return (1.0 - config_.eps) * u + config_.eps;
}

NamedLosses MdlmPrior::lossAt(const at::Tensor& codes, const at::Tensor& ids, const at::Tensor& t,
                              const at::Tensor& masked, const at::Tensor& null) {
  checkLatents(codes, "codes");
  auto z = at::where(masked, maskId(), codes);                                       // [batch, L]
  auto log_p = logProbs(z, t, ids, null);                                            // [batch, L, K]
  auto nll = -log_p.gather(-1, codes.unsqueeze(-1)).squeeze(-1);                     // [batch, L], 0 where unmasked
  auto weighted = nll * masked.to(nll.scalar_type()) / t.to(nll.scalar_type()).unsqueeze(1);  // [batch, L]
  return {{"loss", weighted.mean()}};
}

NamedLosses MdlmPrior::loss(const PriorBatch& batch, std::optional<at::Generator> gen) {
  checkLatents(batch.latents, "codes");
  const int64_t b = batch.latents.size(0);
  auto t = sampleTimes(b, gen);                                                      // [batch]
  auto masked = uniform({b, spec_.tokens}, device(), gen).lt(((1.0 - config_.eps) * t).unsqueeze(1));
  auto null = conditions->sampleDropout(b, device(), gen);
  return lossAt(batch.latents, batch.conditions, t, masked, null);
}

SamplerOptions MdlmPrior::defaultSamplerOptions() const {
  SamplerOptions o;
  o.steps = config_.steps;
  o.temperature = config_.temperature;
  o.top_k = config_.top_k;
  return o;
}

at::Tensor MdlmPrior::sample(const SampleRequest& request, int64_t n, const SamplerOptions& options, at::Generator& gen) {
  if (options.steps <= 0) throw std::invalid_argument("mdlm prior: sampler steps must be positive");
  torch::NoGradGuard no_grad;
  auto ids = requestConditions(request, n);
  const int64_t length = spec_.tokens;
  auto x = at::full({n, length}, maskId(), at::TensorOptions().dtype(at::kLong).device(device()));
  auto time = [&](double t) { return at::full({n}, t, at::TensorOptions().dtype(at::kFloat).device(device())); };
  auto times = at::linspace(1.0, config_.eps, options.steps + 1, at::TensorOptions().dtype(at::kDouble));
  const bool reuse = !config_.time_conditioning;

  // Predictions are cached per sample: a sample's logits are recomputed only after a step changed
  // it (or every step with time conditioning), and only while it still has masked positions.
  auto cached = at::zeros({n, length, spec_.codebook}, at::TensorOptions().dtype(at::kFloat).device(device()));
  auto stale = at::ones({n}, at::TensorOptions().dtype(at::kBool).device(device()));  // [n]
  auto refresh = [&](const at::Tensor& masked, double t) {
    auto rows = stale.logical_and(masked.any(1)).nonzero().squeeze(1);  // samples to recompute
    if (rows.numel() == 0) return;
    auto fresh = logits(x.index_select(0, rows), time(t).index_select(0, rows), ids.index_select(0, rows));
    cached.index_copy_(0, rows, fresh.to(at::kFloat));
    stale.index_fill_(0, rows, false);
    ++last_evaluations_;
  };
  last_evaluations_ = 0;
  for (int64_t i = 0; i < options.steps; ++i) {
    auto masked = x.eq(maskId());  // [n, L]
    if (!masked.any().item<bool>()) break;
    const double t = times[i].item<double>(), s = times[i + 1].item<double>();
    if (!reuse) stale.fill_(true);
    refresh(masked, t);
    auto drawn = sampleCategorical(cached, options.temperature, options.top_k, gen);     // [n, L]
    auto unmask = masked.logical_and(uniform({n, length}, device(), gen).lt((t - s) / t));
    x = at::where(unmask, drawn, x);
    stale = stale.logical_or(unmask.any(1));
  }
  auto masked = x.eq(maskId());
  if (masked.any().item<bool>()) {
    if (!reuse) stale.fill_(true);
    refresh(masked, config_.eps);
    x = at::where(masked, cached.argmax(-1), x);
  }
  return x;
}

}  // namespace latentcell::priors
