// Hurdle head (see HurdleHead.h).
#include "heads/HurdleHead.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace latentcell::heads {

HurdleHead::HurdleHead(int64_t width, double target_sum) : OutputHead(target_sum) {
  if (width <= 0) throw std::invalid_argument(fmt::format("hurdle head: width must be positive, got {}", width));
  proj = register_module("proj", torch::nn::Linear(width, 2));
  core::xavierUniform(proj);
}

HurdleHead::Params HurdleHead::distribution(const at::Tensor& decoder_out) {
  checkShapes(decoder_out, at::Tensor());
  auto out = atLeastFloat32(proj(decoder_out));      // [batch, genes, 2]
  return {out.select(-1, 0), out.select(-1, 1)};
}

HeadLoss HurdleHead::headLoss(const at::Tensor& decoder_out, const at::Tensor& counts, const HeadContext& context) {
  auto p = distribution(decoder_out);
  auto target = logNormalize(counts, requireLibrary(context, "the magnitude target"), target_sum_)
                    .to(p.magnitude.scalar_type());                          // [batch, genes]
  auto expressed = (counts > 0).to(p.magnitude.scalar_type());              // [batch, genes]
  auto bce = at::binary_cross_entropy_with_logits(p.gate_logit, expressed, {}, {}, at::Reduction::None)
                 .sum(1).mean();
  auto mse = (expressed * (p.magnitude - target).square()).sum(1).mean();
  return {bce + mse, {{"hurdle_bce", bce}, {"hurdle_mse", mse}}};
}

at::Tensor HurdleHead::logLikelihood(const at::Tensor& decoder_out, const at::Tensor& counts,
                                     const HeadContext& context) {
  checkShapes(decoder_out, counts);
  auto p = distribution(decoder_out);
  auto target = logNormalize(counts, requireLibrary(context, "the magnitude target"), target_sum_)
                    .to(p.magnitude.scalar_type());
  auto expressed = (counts > 0).to(p.magnitude.scalar_type());
  // log sigmoid(g) for expressed entries, log sigmoid(-g) for zeros.
  auto log_gate = at::log_sigmoid(p.gate_logit * (2.0 * expressed - 1.0));
  const double log_norm = 0.5 * std::log(2.0 * M_PI);
  auto log_magnitude = -0.5 * (p.magnitude - target).square() - log_norm;
  return log_gate + expressed * log_magnitude;
}

at::Tensor HurdleHead::predict(const at::Tensor& decoder_out, const HeadContext& context, PredictMode mode,
                               std::optional<at::Generator> generator) {
  auto p = distribution(decoder_out);
  // Log1p-normalised expression is non-negative; an untrained magnitude may not be.
  auto magnitude = p.magnitude.clamp_min(0.0);
  auto prob = at::sigmoid(p.gate_logit);
  if (mode != PredictMode::Sample) return prob * magnitude;  // already the mean in log1p space
  at::NoGradGuard no_grad;
  return at::bernoulli(prob, generator) * magnitude;
}

}  // namespace latentcell::heads
