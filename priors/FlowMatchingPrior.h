// Flow-matching prior over continuous latents (scLDM sec. 3.3 with SiT's linear interpolant;
// notes sec. 5).
//
//   x_t = t x1 + (1 - t) x0,  x0 ~ N(0, I),  x1 = data latent,  t ~ U[0, 1]
//   loss = mean || v(x_t, t, cond) - (x1 - x0) ||^2
//
// Sampling integrates dx/dt = v from noise at t = 0 to t = 1 (euler, heun or adaptive dopri5,
// priors/OdeSolver.h) under classifier-free guidance:
//   joint     v = v_null + w (v_cond - v_null)                     (scLDM eq. 8, default)
//   additive  v = v_null + sum_k w_k (v_k - v_null), v_k conditioned on key k alone (CFGen)
// The conditional and null passes of one step run as one batched forward. Joint guidance with
// w = 1 is exactly the conditional field, which the sampler then evaluates alone.
#pragma once

#include "priors/DitBackbone.h"
#include "priors/Prior.h"
#include "priors/PriorConfig.h"

namespace latentcell::priors {

class FlowMatchingPrior : public Prior {
 public:
  FlowMatchingPrior(const PriorConfig& config, int64_t tokens, int64_t latent_dim,
                    const std::vector<ConditionColumnSpec>& columns);

  const char* kindName() const override { return "flow"; }

  // v(x, t | conditions, null mask): x [batch, L, d], t [batch] -> [batch, L, d].
  at::Tensor velocity(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& null = {});
  // The guided field of `options` (guidance, guidance_mode, guidance_weights).
  at::Tensor guidedVelocity(const at::Tensor& x, const at::Tensor& t, const at::Tensor& ids,
                            const SamplerOptions& options);

  // The loss with the randomness given: t [batch], x0 [batch, L, d] noise, null [batch, keys].
  NamedLosses lossAt(const at::Tensor& x1, const at::Tensor& ids, const at::Tensor& t, const at::Tensor& x0,
                     const at::Tensor& null);

  NamedLosses loss(const PriorBatch& batch, std::optional<at::Generator> gen = std::nullopt) override;
  at::Tensor sample(const SampleRequest& request, int64_t n, const SamplerOptions& options, at::Generator& gen) override;
  SamplerOptions defaultSamplerOptions() const override;

  DitBackbone backbone{nullptr};

 private:
  FlowConfig config_;
};

}  // namespace latentcell::priors
