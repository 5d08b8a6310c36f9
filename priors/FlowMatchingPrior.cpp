// Flow-matching prior (see FlowMatchingPrior.h).
#include "priors/FlowMatchingPrior.h"

#include "priors/Sampling.h"

#include <ATen/ATen.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::priors {
namespace {

ConditionEncoderOptions conditioningOptions(const PriorConfig& c) {
  return ConditionEncoderOptions{c.backbone.dim, /*timestep=*/true, c.flow.time_scale, c.conditioning.dropout,
                                 parseDropoutMode(c.conditioning.dropout_mode)};
}

}  // namespace

FlowMatchingPrior::FlowMatchingPrior(const PriorConfig& config, int64_t tokens, int64_t latent_dim,
                                     const std::vector<ConditionColumnSpec>& columns)
    : Prior(LatentSpec{LatentKind::Continuous, tokens, latent_dim, 0}, conditioningOptions(config), columns),
      config_(config.flow) {
  if (tokens <= 0 || latent_dim <= 0) throw std::invalid_argument("FlowMatchingPrior: tokens and latent_dim must be positive");
  const auto& b = config.backbone;
  backbone = register_module(
      "backbone", DitBackbone(DitBackboneOptions{b.dim, b.depth, b.heads, b.mlp_ratio, b.dropout, /*in_dim=*/latent_dim,
                                                 /*vocab=*/0, /*positions=*/tokens, /*out_dim=*/latent_dim,
                                                 /*causal=*/false}));
}

at::Tensor FlowMatchingPrior::velocity(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ids,
                                       const at::Tensor& null) {
  return backbone(x, conditions(ids, null, t));  // [batch, L, d]
}

at::Tensor FlowMatchingPrior::guidedVelocity(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ids,
                                             const SamplerOptions& options) {
  const int64_t batch = x.size(0), keys = conditions->keys();
  if (keys == 0) return velocity(x, t, ids);
  auto bool_opts = at::TensorOptions().dtype(at::kBool).device(x.device());
  // Copy 0 is the null pass; joint: copy 1 conditions on every key; additive: copy 1 + k on key k alone.
  const bool joint = options.guidance_mode == GuidanceMode::Joint;
  const int64_t copies = joint ? 2 : 1 + keys;
  std::vector<at::Tensor> nulls{at::ones({batch, keys}, bool_opts)};
  if (joint) {
    nulls.push_back(at::zeros({batch, keys}, bool_opts));
  } else {
    for (int64_t k = 0; k < keys; ++k) {
      auto only_k = at::ones({batch, keys}, bool_opts);
      only_k.select(1, k).fill_(false);
      nulls.push_back(only_k);
    }
  }
  std::vector<int64_t> reps{copies, 1, 1};
  auto v = velocity(x.repeat(reps), t.repeat({copies}), ids.repeat({copies, 1}), at::cat(nulls, 0))
               .view({copies, batch, x.size(1), x.size(2)});  // [copies, batch, L, d]
  auto v_null = v[0];
  if (joint) return v_null + options.guidance * (v[1] - v_null);
  std::vector<double> weights = options.guidance_weights;
  if (weights.empty()) weights.assign(static_cast<size_t>(keys), options.guidance);
  if (static_cast<int64_t>(weights.size()) != keys) {
    throw std::invalid_argument(fmt::format("flow prior: additive guidance needs one weight per condition column ({}), "
                                            "got {}",
                                            keys, weights.size()));
  }
  auto guided = v_null.clone();
  for (int64_t k = 0; k < keys; ++k) guided = guided + weights[static_cast<size_t>(k)] * (v[1 + k] - v_null);
  return guided;
}

NamedLosses FlowMatchingPrior::lossAt(const at::Tensor& x1, const at::Tensor& ids, const at::Tensor& t,
                                      const at::Tensor& x0, const at::Tensor& null) {
  checkLatents(x1, "latents");
  auto tt = t.to(x1.scalar_type()).view({-1, 1, 1});  // [batch, 1, 1]
  auto xt = tt * x1 + (1 - tt) * x0;                   // [batch, L, d]
  auto v = velocity(xt, t, ids, null);
  return {{"loss", at::mse_loss(v.to(at::kFloat), (x1 - x0).to(at::kFloat))}};
}

NamedLosses FlowMatchingPrior::loss(const PriorBatch& batch, std::optional<at::Generator> gen) {
  checkLatents(batch.latents, "latents");
  const auto& x1 = batch.latents;
  const int64_t b = x1.size(0);
  auto t = uniform({b}, device(), gen);
  auto x0 = normal(x1.sizes(), device(), gen).to(x1.scalar_type());
  auto null = conditions->sampleDropout(b, device(), gen);
  return lossAt(x1, batch.conditions, t, x0, null);
}

SamplerOptions FlowMatchingPrior::defaultSamplerOptions() const {
  SamplerOptions o;
  o.solver = parseOdeMethod(config_.solver);
  o.steps = config_.steps;
  o.atol = config_.atol;
  o.rtol = config_.rtol;
  o.max_steps = config_.max_steps;
  o.guidance = config_.guidance;
  o.guidance_mode = parseGuidanceMode(config_.guidance_mode);
  o.guidance_weights = config_.guidance_weights;
  return o;
}

at::Tensor FlowMatchingPrior::sample(const SampleRequest& request, int64_t n, const SamplerOptions& options,
                                     at::Generator& gen) {
  torch::NoGradGuard no_grad;
  auto ids = requestConditions(request, n);
  auto x0 = normal({n, spec_.tokens, spec_.dim}, device(), gen);  // [n, L, d]
  const bool conditional_only = options.guidance_mode == GuidanceMode::Joint && options.guidance == 1.0;
  auto field = [&](const at::Tensor& x, double t) {
    auto tt = at::full({n}, t, x.options());
    return conditional_only ? velocity(x, tt, ids) : guidedVelocity(x, tt, ids, options);
  };
  OdeOptions ode{options.solver, options.steps, /*final_euler=*/false, options.atol, options.rtol, options.max_steps};
  auto result = integrate(field, x0, 0.0, 1.0, ode);
  last_evaluations_ = result.evaluations;
  return result.x;
}

}  // namespace latentcell::priors
