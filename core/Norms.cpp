// Normalisation layers (see Norms.h).
#include "core/Norms.h"

#include <ATen/ATen.h>
#include <torch/nn/options/normalization.h>

namespace latentcell::core {

torch::nn::LayerNorm makeLayerNorm(int64_t dim, bool affine, double eps) {
  return torch::nn::LayerNorm(
      torch::nn::LayerNormOptions({dim}).elementwise_affine(affine).eps(eps));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, bool affine) : eps_(eps) {
  if (affine) weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  auto y = x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight.defined() ? y * weight : y;
}

}  // namespace latentcell::core
