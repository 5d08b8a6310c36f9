// Sinusoidal timestep embedding followed by an MLP (DiT; notes sec. 4).
//
//   half = freq_dim / 2, f_i = exp(-ln(max_period) * i / half)
//   emb(t) = [cos(t f), sin(t f)] -> Linear(freq_dim, dim) -> SiLU -> Linear(dim, dim)
//
// t is a float per sample; flow matching feeds t in [0, 1], discrete diffusion t * 1000, as the
// reference systems do.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace latentcell::core {

// t [batch] -> [batch, freq_dim]; an odd freq_dim gets one zero column at the end.
at::Tensor sinusoidalEmbedding(const at::Tensor& t, int64_t freq_dim, double max_period = 10000.0);

class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  explicit TimestepEmbeddingImpl(int64_t dim, int64_t freq_dim = 256, double max_period = 10000.0);
  at::Tensor forward(const at::Tensor& t);  // [batch] -> [batch, dim]

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  int64_t freq_dim_;
  double max_period_;
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace latentcell::core
