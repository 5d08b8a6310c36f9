// Normalisation layers: LayerNorm with or without affine parameters, and RMSNorm.
//
// LibTorch's C++ API has LayerNorm but no RMSNorm; RMSNorm here follows torch.nn.RMSNorm
// (x / sqrt(mean(x^2) + eps) * weight).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace latentcell::core {

// LayerNorm over the last dimension. DiT blocks use affine = false, eps = 1e-6.
torch::nn::LayerNorm makeLayerNorm(int64_t dim, bool affine = true, double eps = 1e-5);

class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(int64_t dim, double eps = 1e-6, bool affine = true);
  at::Tensor forward(const at::Tensor& x);  // [..., dim]

  at::Tensor weight;  // [dim], undefined without affine

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace latentcell::core
