// Autoregressive prior over FSQ codes (ExpressionVAE sec. 3.2; notes sec. 5):
// p(c | cond) = prod_l p(c_l | c_<l, cond) with a causal DiT.
//
// The sequence fed to the backbone is [BOS, c_0, ..., c_{L-2}] where BOS is one extra token id
// (= codebook size) at position 0, and output l predicts c_l; the conditions enter every block
// through adaLN (c = sum of the condition embeddings, no timestep). Training is teacher forcing
// with cross-entropy averaged over all L positions.
//
// Sampling takes L sequential steps with temperature and top-k. With the KV cache each step runs
// only the newest token through the blocks against the cached keys/values of the prefix (O(L) per
// step); without it each step re-runs the whole prefix. Both draw the same random numbers in the
// same order, so one seed gives the same codes either way.
#pragma once

#include "priors/DitBackbone.h"
#include "priors/Prior.h"
#include "priors/PriorConfig.h"

namespace latentcell::priors {

class ArPrior : public Prior {
 public:
  ArPrior(const PriorConfig& config, int64_t tokens, int64_t codebook, const std::vector<ConditionColumnSpec>& columns);

  const char* kindName() const override { return "ar"; }
  int64_t bosId() const { return spec_.codebook; }

  // Teacher forcing: codes [batch, L] -> logits [batch, L, codebook], row l predicting c_l from c_<l.
  at::Tensor logits(const at::Tensor& codes, const at::Tensor& ids, const at::Tensor& null = {});
  // Cross-entropy of `codes` under the conditions, with the null mask given.
  NamedLosses lossAt(const at::Tensor& codes, const at::Tensor& ids, const at::Tensor& null);

  NamedLosses loss(const PriorBatch& batch, std::optional<at::Generator> gen = std::nullopt) override;
  at::Tensor sample(const SampleRequest& request, int64_t n, const SamplerOptions& options, at::Generator& gen) override;
  SamplerOptions defaultSamplerOptions() const override;

  DitBackbone backbone{nullptr};

 private:
  ArConfig config_;
};

}  // namespace latentcell::priors
