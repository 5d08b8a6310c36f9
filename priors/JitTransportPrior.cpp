// JiT endpoint transport prior (see JitTransportPrior.h).
#include "priors/JitTransportPrior.h"

#include "core/Init.h"
#include "priors/Sampling.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/types.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

namespace latentcell::priors {
namespace {

ConditionEncoderOptions conditioningOptions(const PriorConfig& c) {
  return ConditionEncoderOptions{c.backbone.dim, /*timestep=*/true, c.jit.time_scale, c.conditioning.dropout,
                                 parseDropoutMode(c.conditioning.dropout_mode)};
}

// max(1 - t, t_clip) shaped to broadcast over [batch, cells, width].
at::Tensor remaining(const at::Tensor& t, const at::Tensor& like, double t_clip) {
  return (1.0 - t.to(like.scalar_type())).clamp_min(t_clip).view({-1, 1, 1});
}

}  // namespace

at::Tensor jitVelocityFromX(const at::Tensor& x, const at::Tensor& z, const at::Tensor& t, double t_clip) {
  return (x - z) / remaining(t, z, t_clip);
}

at::Tensor jitXFromVelocity(const at::Tensor& v, const at::Tensor& z, const at::Tensor& t, double t_clip) {
  return z + remaining(t, z, t_clip) * v;
}

SeedAttentionImpl::SeedAttentionImpl(int64_t dim, int64_t heads) {
  torch::NoGradGuard no_grad;
  query = register_parameter("query", at::empty({1, 1, dim}));
  torch::nn::init::normal_(query, 0.0, 0.02);
  attn = register_module("attn", core::MultiHeadAttention(core::AttentionOptions{dim, heads}));
}

at::Tensor SeedAttentionImpl::forward(const at::Tensor& tokens) {
  auto q = query.expand({tokens.size(0), 1, query.size(2)});  // [batch, 1, dim]
  return attn(q, tokens);                                      // [batch, 1, dim]
}

DeepSetsSummaryImpl::DeepSetsSummaryImpl(int64_t dim) {
  phi = register_module("phi", core::Mlp(dim, dim, core::Activation::Gelu));
  rho = register_module("rho", core::Mlp(dim, dim, core::Activation::Gelu));
  fuse = register_module("fuse", torch::nn::Linear(2 * dim, dim));
  core::zeroInit(fuse);
}

at::Tensor DeepSetsSummaryImpl::forward(const at::Tensor& h) {
  auto s = rho(phi(h).mean(1));                                 // [batch, dim]
  auto joint = at::cat({h, s.unsqueeze(1).expand_as(h)}, -1);  // [batch, cells, 2 dim]
  return h + fuse(joint);                                       // [batch, cells, dim]
}

JitTransportPrior::JitTransportPrior(const PriorConfig& config, int64_t width,
                                     const std::vector<ConditionColumnSpec>& columns)
    : Prior(LatentSpec{LatentKind::Continuous, /*tokens=*/0, width, 0}, conditioningOptions(config), columns),
      config_(config.jit) {
  if (width <= 0) throw std::invalid_argument("JitTransportPrior: the cell latent width must be positive");
  const auto& b = config.backbone;
  backbone = register_module(
      "backbone", DitBackbone(DitBackboneOptions{b.dim, b.depth, b.heads, b.mlp_ratio, b.dropout, /*in_dim=*/width,
                                                 /*vocab=*/0, /*positions=*/0, /*out_dim=*/width, /*causal=*/false}));
  if (config_.condition == "seed" && !columns.empty()) {
    seed = register_module("seed", SeedAttention(b.dim, config_.seed_heads));
  }
  if (config_.set_summary) set_summary = register_module("set_summary", DeepSetsSummary(b.dim));
}

at::Tensor JitTransportPrior::network(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids,
                                      const at::Tensor& null) {
  auto h = backbone->embed(z);      // [batch, cells, dim]
  if (set_summary) h = set_summary(h);
  if (config_.condition == "adaln") return backbone->run(h, conditions(ids, null, t));
  auto c = conditions->timeEmbedding(t);                     // [batch, dim]
  at::Tensor token;
  if (seed) token = seed(conditions->embedKeys(ids, null));  // [batch, 1, dim]
  else conditions->checkIds(ids);
  return backbone->run(h, c, token);                         // [batch, cells, width]
}

at::Tensor JitTransportPrior::velocity(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids) {
  auto out = network(z, t, ids);
  return predictsX() ? jitVelocityFromX(out, z, t, config_.t_clip) : out;
}

at::Tensor JitTransportPrior::sampleTimes(int64_t batch, std::optional<at::Generator> gen) const {
  return at::sigmoid(normal({batch}, device(), gen) * config_.t_std + config_.t_mean);
}

at::Tensor JitTransportPrior::start(const at::Tensor& control, c10::IntArrayRef shape,
                                    std::optional<at::Generator> gen) const {
  if (config_.start == "control") return control;
  auto eps = normal(shape, device(), gen);
  if (config_.start == "noise") return eps;
  return eps.to(control.scalar_type()) + config_.control_scale * control;
}

NamedLosses JitTransportPrior::lossAt(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& ids,
                                      const at::Tensor& t, const at::Tensor& null) {
  checkLatents(x1, "perturbed sets");
  checkLatents(x0, "path starts");
  auto tt = t.to(x1.scalar_type()).view({-1, 1, 1});  // [batch, 1, 1]
  auto z = (1 - tt) * x0 + tt * x1;                   // [batch, cells, width]
  auto out = network(z, t, ids, null);
  at::Tensor x_hat, v_hat;
  if (predictsX()) {
    x_hat = out;
    v_hat = jitVelocityFromX(out, z, t, config_.t_clip);
  } else {
    v_hat = out;
    x_hat = jitXFromVelocity(out, z, t, config_.t_clip);
  }
  auto v_target = jitVelocityFromX(x1, z, t, config_.t_clip);
  auto x_mse = at::mse_loss(x_hat.to(at::kFloat), x1.to(at::kFloat));
  auto v_mse = at::mse_loss(v_hat.to(at::kFloat), v_target.to(at::kFloat));
  return {{"loss", config_.loss == "x" ? x_mse : v_mse}, {"x_mse", x_mse.detach()}, {"v_mse", v_mse.detach()}};
}

NamedLosses JitTransportPrior::loss(const PriorBatch& batch, std::optional<at::Generator> gen) {
  checkLatents(batch.latents, "perturbed sets");
  const auto& x1 = batch.latents;
  if (needsControl()) {
    checkLatents(batch.control, "control sets");
    if (batch.control.sizes() != x1.sizes()) {
      throw std::invalid_argument(fmt::format("jit prior: control sets {} and perturbed sets {} must have the same shape",
                                              batch.control.sizes(), x1.sizes()));
    }
  }
  const int64_t b = x1.size(0);
  auto t = sampleTimes(b, gen);
  auto x0 = start(batch.control, x1.sizes(), gen).to(x1.scalar_type());
  auto null = conditions->sampleDropout(b, device(), gen);
  return lossAt(x0, x1, batch.conditions, t, null);
}

SamplerOptions JitTransportPrior::defaultSamplerOptions() const {
  SamplerOptions o;
  o.solver = parseOdeMethod(config_.solver);
  o.steps = config_.steps;
  return o;
}

at::Tensor JitTransportPrior::sample(const SampleRequest& request, int64_t n, const SamplerOptions& options,
                                     at::Generator& gen) {
  torch::NoGradGuard no_grad;
  auto ids = requestConditions(request, n);
  at::Tensor control;
  int64_t cells = config_.cells;
  if (request.control.defined()) {
    checkLatents(request.control, "control sets");
    if (request.control.size(0) != n) {
      throw std::invalid_argument(fmt::format("jit prior: {} control sets given for {} samples", request.control.size(0), n));
    }
    control = request.control.to(device());
    cells = control.size(1);
  } else if (needsControl()) {
    throw std::invalid_argument("jit prior: sampling from start '" + config_.start +
                                "' needs control sets [n, cells, width] in the request");
  }
  if (cells <= 0) throw std::invalid_argument("jit prior: set jit.cells (cells per generated set) to sample from noise");
  auto x0 = start(control, {n, cells, spec_.dim}, gen);  // [n, cells, width]
  auto field = [&](const at::Tensor& x, double t) { return velocity(x, at::full({n}, t, x.options()), ids); };
  OdeOptions ode{options.solver, options.steps, /*final_euler=*/true, options.atol, options.rtol, options.max_steps};
  auto result = integrate(field, x0, 0.0, 1.0, ode);
  last_evaluations_ = result.evaluations;
  return result.x;
}

}  // namespace latentcell::priors
