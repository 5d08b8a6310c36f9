// The MSE head: regression of log1p-normalised expression, y = log1p(x / l * target_sum)
// (ExpressionVAE's `mse`, p(y | h) = N(mu, 1); the reconstruction benchmark paper's AE objective).
//
// One linear layer per gene gives mu. The loss is the squared error summed over genes and averaged
// over cells, like the other heads' losses, so KL weights keep their meaning across heads. There is
// no stochastic step: `sample` and `mean` both return mu.
#pragma once

#include "heads/OutputHead.h"

#include <torch/nn/modules/linear.h>

#include <cstdint>

namespace latentcell::heads {

class MseHead : public OutputHead {
 public:
  MseHead(int64_t width, double target_sum = 1e4);

  at::Tensor mean(const at::Tensor& decoder_out);  // [batch, genes]

  at::Tensor logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                           const HeadContext& context) override;
  at::Tensor predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                     std::optional<at::Generator> generator = std::nullopt) override;
  ValueSpace valueSpace() const override { return ValueSpace::LogNormalized; }
  const char* kind() const override { return "mse"; }
  bool needsIntegerCounts() const override { return false; }

  torch::nn::Linear proj{nullptr};  // width -> 1

 protected:
  HeadLoss headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) override;
};

}  // namespace latentcell::heads
