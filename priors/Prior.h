// The interface every stage-2 prior implements: a loss on a batch of latents and their condition
// ids, and sampling of new latents for given conditions (architecture sketch: Prior).
//
// Priors differ in the latents they model: the autoregressive and masked-diffusion priors model
// FSQ code indices [batch, L] int64, the flow-matching prior continuous latents [batch, L, d], the
// transport prior sets of continuous cell latents [sets, cells, width]. Each prior records which
// kind it needs and checks every batch against it, so an FSQ prior fed Gaussian latents (or the
// reverse) fails with a message that says which autoencoder bottleneck fits, instead of a shape
// error deep in an embedding.
//
// Losses come back as named scalars, the first one optimised: the same shape as the trainer's
// LossTerms, which a training task wraps without knowing the prior. Training randomness (times,
// noise, masks, condition dropout) comes from the default generator unless one is passed; every
// prior also exposes a deterministic loss with that randomness given, for tests and references.
#pragma once

#include "priors/ConditionEncoder.h"
#include "priors/OdeSolver.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::priors {

enum class LatentKind { Codes, Continuous };
const char* toString(LatentKind kind);

// What a prior models: code indices [batch, tokens] in [0, codebook), or continuous tokens
// [batch, tokens, dim]; tokens == 0 means any number (a set of cells).
struct LatentSpec {
  LatentKind kind = LatentKind::Continuous;
  int64_t tokens = 0;
  int64_t dim = 0;       // continuous
  int64_t codebook = 0;  // codes
};

using NamedLosses = std::vector<std::pair<std::string, at::Tensor>>;

struct PriorBatch {
  at::Tensor latents;     // codes [batch, L] int64, continuous [batch, L, d], or perturbed sets [batch, cells, width]
  at::Tensor conditions;  // [batch, keys] int64 condition ids
  at::Tensor control;     // transport prior: the matched control sets [batch, cells, width]
};

struct SampleRequest {
  at::Tensor conditions;  // [keys] (the same for every sample) or [n, keys] int64
  at::Tensor control;     // transport prior: control sets [n, cells, width]
};

enum class GuidanceMode { Joint, Additive };
GuidanceMode parseGuidanceMode(const std::string& name);

struct SamplerOptions {
  // Continuous priors.
  OdeMethod solver = OdeMethod::Dopri5;
  int64_t steps = 100;  // ODE steps (euler, heun); masked diffusion: denoising steps
  double atol = 1e-5;
  double rtol = 1e-5;
  int64_t max_steps = 10000;
  // Classifier-free guidance (flow matching): joint v = v_null + w (v_cond - v_null), additive
  // v = v_null + sum_k w_k (v_k - v_null) with v_k conditioned on key k alone.
  double guidance = 1.0;
  GuidanceMode guidance_mode = GuidanceMode::Joint;
  std::vector<double> guidance_weights;  // additive: one per key; empty = `guidance` for every key
  // Discrete priors.
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = all codes
  bool kv_cache = true;      // autoregressive: reuse keys/values of the prefix
};

class Prior : public torch::nn::Module {
 public:
  Prior(LatentSpec spec, const ConditionEncoderOptions& conditioning, const std::vector<ConditionColumnSpec>& columns);

  virtual const char* kindName() const = 0;  // "ar", "mdlm", "flow", "jit"
  const LatentSpec& latentSpec() const { return spec_; }

  // Named losses on a training batch; the first is the objective.
  virtual NamedLosses loss(const PriorBatch& batch, std::optional<at::Generator> gen = std::nullopt) = 0;
  // n new latents for the request's conditions (transport prior: n transported sets).
  virtual at::Tensor sample(const SampleRequest& request, int64_t n, const SamplerOptions& options,
                            at::Generator& gen) = 0;
  // The sampler settings of the prior's config, for callers to override.
  virtual SamplerOptions defaultSamplerOptions() const = 0;

  // Network evaluations made by the last sample() call: forward passes, each over the whole batch,
  // the guided copies of it, or (masked diffusion) the samples that need a new prediction.
  int64_t lastEvaluations() const { return last_evaluations_; }

  c10::Device device() const;

  // Throws std::invalid_argument when `latents` are not what this prior models; `what` names them.
  void checkLatents(const at::Tensor& latents, const std::string& what) const;

  ConditionEncoder conditions{nullptr};

 protected:
  // [keys] or [n, keys] condition ids -> [n, keys] on the prior's device, checked.
  at::Tensor requestConditions(const SampleRequest& request, int64_t n) const;

  LatentSpec spec_;
  int64_t last_evaluations_ = 0;
};

}  // namespace latentcell::priors
