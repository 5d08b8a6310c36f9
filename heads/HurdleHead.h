// The hurdle head (MAST-style, Finak et al. 2015; ExpressionVAE sec. 3.1; notes sec. 3).
//
// Two numbers per gene from one linear layer: the logit of the zero-gate P(x > 0) and a positive
// magnitude mu in log1p-normalised space, y = log1p(x / l * target_sum). The loss is ExpressionVAE's
// BCE on the gate plus squared error of mu on the non-zero entries only, each summed over genes and
// averaged over cells:
//
//   loss = mean_cells sum_genes [ BCE(gate, 1{x > 0}) + 1{x > 0} (mu - y)^2 ]
//
// Zeros carry no magnitude target, so the magnitude learns the conditional expression of cells
// that express the gene, and the gate learns the dropout rate. `sample` draws the gate and emits
// mu deterministically (the paper's inference rule); `mean` returns P(x > 0) * mu. The
// log-likelihood pairs the Bernoulli with a unit-variance Gaussian on y for the expressed entries.
#pragma once

#include "heads/OutputHead.h"

#include <torch/nn/modules/linear.h>

#include <cstdint>

namespace latentcell::heads {

class HurdleHead : public OutputHead {
 public:
  HurdleHead(int64_t width, double target_sum = 1e4);

  struct Params {
    at::Tensor gate_logit;  // [batch, genes] logit of P(x > 0)
    at::Tensor magnitude;   // [batch, genes] log1p-normalised expression when expressed
  };
  Params distribution(const at::Tensor& decoder_out);

  at::Tensor logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                           const HeadContext& context) override;
  at::Tensor predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                     std::optional<at::Generator> generator = std::nullopt) override;
  ValueSpace valueSpace() const override { return ValueSpace::LogNormalized; }
  const char* kind() const override { return "hurdle"; }
  bool needsIntegerCounts() const override { return false; }

  torch::nn::Linear proj{nullptr};  // width -> 2: gate logit, magnitude

 protected:
  HeadLoss headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) override;
};

}  // namespace latentcell::heads
