// MSE head (see MseHead.h).
#include "heads/MseHead.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace latentcell::heads {

MseHead::MseHead(int64_t width, double target_sum) : OutputHead(target_sum) {
  if (width <= 0) throw std::invalid_argument(fmt::format("mse head: width must be positive, got {}", width));
  proj = register_module("proj", torch::nn::Linear(width, 1));
  core::xavierUniform(proj);
}

at::Tensor MseHead::mean(const at::Tensor& decoder_out) {
  checkShapes(decoder_out, at::Tensor());
  return atLeastFloat32(proj(decoder_out).squeeze(-1));  // [batch, genes]
}

HeadLoss MseHead::headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) {
  auto mu = mean(decoder_out);
  auto target = logNormalize(counts, requireLibrary(context, "the log1p-normalised target"), target_sum_)
                    .to(mu.scalar_type());  // [batch, genes]
  auto mse = (mu - target).square().sum(1).mean();
  return {mse, {{"mse", mse}}};
}

at::Tensor MseHead::logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) {
  checkShapes(decoder_out, counts);
  auto mu = mean(decoder_out);
  auto target = logNormalize(counts, requireLibrary(context, "the log1p-normalised target"), target_sum_)
                    .to(mu.scalar_type());
  return -0.5 * (mu - target).square() - 0.5 * std::log(2.0 * M_PI);
}

at::Tensor MseHead::predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                            std::optional<at::Generator> generator) {
  return mean(decoder_out);  // every mode: the head is a point prediction in log1p space
}

}  // namespace latentcell::heads
