// Masked discrete diffusion prior over FSQ codes (MDLM, Sahoo et al. 2024; ExpressionVAE sec. 3.2;
// notes sec. 5).
//
// Forward process: absorbing state. At time t each code is replaced by the mask token (id =
// codebook size) with probability (1 - eps) t, t in [eps, 1]; within a batch the times are
// antithetic (stratified: (u + i / B) mod 1). The bidirectional DiT predicts x0 at every position.
// SUBS parameterisation: the mask token gets no probability (it is not among the outputs, i.e. its
// logit is -inf) and a position already unmasked in z_t copies its token. Loss (MDLM's continuous-
// time ELBO for the log-linear schedule, whose weight dsigma / expm1(sigma) is exactly 1/t):
//
//   loss = (1 / (B L)) sum_b sum_{l masked} (1 / t_b) * -log p(c_bl | z_t, cond)
//
// i.e. averaged over all B L positions, unmasked ones contributing 0 (the public code's mean).
//
// Sampler: times 1 = t_0 > t_1 > ... > t_S = eps; at step t -> s each still-masked position is
// unmasked with probability (t - s) / t, its token drawn from p(x0 | z_t) (temperature, top-k);
// while a step leaves a sample unchanged, the next step reuses that sample's prediction (valid
// because the network does not see t unless time_conditioning is on, in which case it always
// re-runs). The cache is per sample, so a step runs the network only on the samples that changed
// and still have masks: with L tokens a sample needs at most L + 1 forward passes whatever the
// number of steps. A final argmax pass fills any position still masked.
#pragma once

#include "priors/DitBackbone.h"
#include "priors/Prior.h"
#include "priors/PriorConfig.h"

namespace latentcell::priors {

class MdlmPrior : public Prior {
 public:
  MdlmPrior(const PriorConfig& config, int64_t tokens, int64_t codebook, const std::vector<ConditionColumnSpec>& columns);

  const char* kindName() const override { return "mdlm"; }
  int64_t maskId() const { return spec_.codebook; }
  double eps() const { return config_.eps; }

  // Network logits [batch, L, codebook] for x0 given z_t [batch, L] (codes or maskId()); t [batch]
  // is used only with time conditioning.
  at::Tensor logits(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& null = {});
  // SUBS log-probabilities [batch, L, codebook]: log_softmax(logits) at masked positions, the
  // position's own token (log 1 = 0, others -inf) elsewhere.
  at::Tensor logProbs(const at::Tensor& z, const at::Tensor& t, const at::Tensor& ids, const at::Tensor& null = {});

  // Training times [batch] in [eps, 1], antithetic when configured.
  at::Tensor sampleTimes(int64_t batch, std::optional<at::Generator> gen = std::nullopt) const;
  // The loss with the randomness given: t [batch], masked [batch, L] bool (true = masked in z_t).
  NamedLosses lossAt(const at::Tensor& codes, const at::Tensor& ids, const at::Tensor& t, const at::Tensor& masked,
                     const at::Tensor& null);

  NamedLosses loss(const PriorBatch& batch, std::optional<at::Generator> gen = std::nullopt) override;
  at::Tensor sample(const SampleRequest& request, int64_t n, const SamplerOptions& options, at::Generator& gen) override;
  SamplerOptions defaultSamplerOptions() const override;

  DitBackbone backbone{nullptr};

 private:
  MdlmConfig config_;
};

}  // namespace latentcell::priors
