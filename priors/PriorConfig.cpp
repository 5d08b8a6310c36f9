// Prior configuration (see PriorConfig.h).
#include "priors/PriorConfig.h"

#include <fmt/format.h>

namespace latentcell::priors {

void BackboneConfig::visit(core::ConfigVisitor& v) {
  v.field("dim", dim, "model width D of the DiT");
  v.field("depth", depth, "number of DiT blocks");
  v.field("heads", heads, "attention heads per block (must divide dim)");
  v.field("mlp_ratio", mlp_ratio, "MLP hidden width as a multiple of dim");
  v.field("dropout", dropout, "attention-probability dropout during training");
}

void BackboneConfig::validate() const {
  if (dim <= 0) reject("dim", "must be positive");
  if (depth <= 0) reject("depth", "must be positive");
  if (heads <= 0) reject("heads", "must be positive");
  if (dim % heads != 0) reject("dim", fmt::format("must be a multiple of heads ({})", heads));
  if (mlp_ratio <= 0) reject("mlp_ratio", "must be positive");
  if (dropout < 0 || dropout >= 1) reject("dropout", "must be in [0, 1)");
}

void ConditioningConfig::visit(core::ConfigVisitor& v) {
  v.field("dropout", dropout, "probability that a sample's conditions are replaced by the null condition "
                              "during training (classifier-free guidance)");
  v.choice("dropout_mode", dropout_mode, {"joint", "additive"},
           "joint: one mask per sample over all condition columns; additive: one per sample and column");
  v.field("external_embeddings", external_embeddings,
          "external embedding tables as 'column=path' (.csv/.tsv/.safetensors/.h5ad); that column is embedded by a "
          "learned projection of the table's vector for each label instead of a learned table");
  v.field("missing_as_null", missing_as_null,
          "labels without an external vector use the learned null vector (else they are an error)");
}

void ConditioningConfig::validate() const {
  if (dropout < 0 || dropout > 1) reject("dropout", "must be in [0, 1]");
  for (const auto& e : external_embeddings) {
    const auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == e.size()) {
      reject("external_embeddings", fmt::format("entry '{}' must be 'column=path'", e));
    }
  }
}

void ArConfig::visit(core::ConfigVisitor& v) {
  v.field("temperature", temperature, "sampling temperature (0 = greedy)");
  v.field("top_k", top_k, "sample among the k most likely codes (0 = all)");
  v.field("kv_cache", kv_cache, "reuse the keys and values of the prefix while sampling");
}

void ArConfig::validate() const {
  if (temperature < 0) reject("temperature", "must be >= 0");
  if (top_k < 0) reject("top_k", "must be >= 0");
}

void MdlmConfig::visit(core::ConfigVisitor& v) {
  v.field("eps", eps, "t is drawn in [eps, 1] and masks a token with probability (1 - eps) t");
  v.field("antithetic", antithetic, "stratify the times of a batch (antithetic sampling)");
  v.field("steps", steps, "denoising steps of the sampler");
  v.field("time_conditioning", time_conditioning,
          "feed t to the network (MDLM default: no; the masks tell the noise level, and predictions are then "
          "reused while nothing changes)");
  v.field("time_scale", time_scale, "the timestep embedding sees t * time_scale");
  v.field("temperature", temperature, "sampling temperature of p(x0 | z_t) (0 = greedy)");
  v.field("top_k", top_k, "sample among the k most likely codes (0 = all)");
}

void MdlmConfig::validate() const {
  if (eps <= 0 || eps >= 1) reject("eps", "must be in (0, 1)");
  if (steps <= 0) reject("steps", "must be positive");
  if (time_scale <= 0) reject("time_scale", "must be positive");
  if (temperature < 0) reject("temperature", "must be >= 0");
  if (top_k < 0) reject("top_k", "must be >= 0");
}

void FlowConfig::visit(core::ConfigVisitor& v) {
  v.choice("solver", solver, {"euler", "heun", "dopri5"}, "ODE solver of the sampler");
  v.field("steps", steps, "steps of the euler and heun solvers");
  v.field("atol", atol, "dopri5 absolute tolerance");
  v.field("rtol", rtol, "dopri5 relative tolerance");
  v.field("max_steps", max_steps, "dopri5 gives up after this many steps");
  v.field("guidance", guidance, "classifier-free guidance weight w (1 = conditional field, 0 = unconditional)");
  v.choice("guidance_mode", guidance_mode, {"joint", "additive"},
           "joint: v_null + w (v_cond - v_null); additive: v_null + sum_k w_k (v_k - v_null)");
  v.field("guidance_weights", guidance_weights, "additive guidance: one weight per condition column (empty = guidance)");
  v.field("time_scale", time_scale, "the timestep embedding sees t * time_scale");
}

void FlowConfig::validate() const {
  if (steps <= 0) reject("steps", "must be positive");
  if (atol <= 0) reject("atol", "must be positive");
  if (rtol < 0) reject("rtol", "must be >= 0");
  if (max_steps <= 0) reject("max_steps", "must be positive");
  if (time_scale <= 0) reject("time_scale", "must be positive");
  if (!guidance_weights.empty() && guidance_mode != "additive") {
    reject("guidance_weights", "only apply with guidance_mode: additive");
  }
}

void JitConfig::visit(core::ConfigVisitor& v) {
  v.choice("prediction", prediction, {"x", "v"}, "the network predicts the endpoint (x) or the velocity (v)");
  v.choice("loss", loss, {"x", "v"}, "the loss compares endpoints (x) or velocities (v)");
  v.choice("start", start, {"control", "mixed", "noise"},
           "start of the path: the control set (SCALE), Gaussian noise plus control_scale * control (mixed start), "
           "or noise alone (JiT noise-to-data)");
  v.field("control_scale", control_scale, "mixed start: Z0' = eps + control_scale * Z0");
  v.choice("condition", condition, {"seed", "adaln"},
           "seed: conditions pooled by seed attention into a token that joins every block (SCALE); adaln: their sum "
           "joins the timestep in the adaLN modulation (DiT)");
  v.field("seed_heads", seed_heads, "attention heads of the seed attention (must divide backbone.dim)");
  v.field("set_summary", set_summary, "fuse a DeepSets summary rho(mean phi(h)) of the set into every cell token");
  v.field("t_mean", t_mean, "t = sigmoid(N(t_mean, t_std^2)) during training");
  v.field("t_std", t_std, "t = sigmoid(N(t_mean, t_std^2)) during training");
  v.field("t_clip", t_clip, "velocity from an endpoint prediction: (x - z_t) / max(1 - t, t_clip)");
  v.choice("solver", solver, {"euler", "heun", "dopri5"}, "ODE solver of the sampler (heun: last step Euler)");
  v.field("steps", steps, "sampler steps");
  v.field("cells", cells, "cells per generated set when sampling from noise without control sets (0 = unset)");
  v.field("time_scale", time_scale, "the timestep embedding sees t * time_scale");
}

void JitConfig::validate() const {
  if (control_scale < 0) reject("control_scale", "must be >= 0");
  if (seed_heads <= 0) reject("seed_heads", "must be positive");
  if (t_std <= 0) reject("t_std", "must be positive");
  if (t_clip <= 0 || t_clip > 1) reject("t_clip", "must be in (0, 1]");
  if (steps <= 0) reject("steps", "must be positive");
  if (cells < 0) reject("cells", "must be >= 0");
  if (time_scale <= 0) reject("time_scale", "must be positive");
}

void PriorConfig::visit(core::ConfigVisitor& v) {
  v.choice("kind", kind, {"ar", "mdlm", "flow", "jit"},
           "prior family: ar (autoregressive over FSQ codes), mdlm (masked diffusion over FSQ codes), flow (flow "
           "matching over continuous latents), jit (SCALE endpoint transport of continuous cell sets)");
  v.section("backbone", backbone, "DiT backbone");
  v.section("conditioning", conditioning, "condition embeddings and dropout");
  v.section("ar", ar, "autoregressive prior (kind: ar)");
  v.section("mdlm", mdlm, "masked diffusion prior (kind: mdlm)");
  v.section("flow", flow, "flow-matching prior (kind: flow)");
  v.section("jit", jit, "JiT endpoint transport prior (kind: jit)");
}

void PriorConfig::validate() const {
  if (kind == "jit" && jit.condition == "seed" && backbone.dim % jit.seed_heads != 0) {
    reject("kind", fmt::format("jit.seed_heads ({}) must divide backbone.dim ({})", jit.seed_heads, backbone.dim));
  }
}

}  // namespace latentcell::priors
