// Sinusoidal timestep embedding (see TimestepEmbedding.h).
#include "core/TimestepEmbedding.h"

#include "core/Init.h"

#include <ATen/ATen.h>

#include <cmath>

namespace latentcell::core {

at::Tensor sinusoidalEmbedding(const at::Tensor& t, int64_t freq_dim, double max_period) {
  const int64_t half = freq_dim / 2;
  // Double stays double (gradient checks); everything else is computed in float32.
  const auto dtype = t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto opts = at::TensorOptions().dtype(dtype).device(t.device());
  auto freqs = at::exp(-std::log(max_period) * at::arange(half, opts) / static_cast<double>(half));  // [half]
  auto args = t.to(dtype).unsqueeze(1) * freqs.unsqueeze(0);                               // [b, half]
  auto emb = at::cat({at::cos(args), at::sin(args)}, -1);                                         // [b, 2 half]
  if (freq_dim % 2 == 1) emb = at::cat({emb, at::zeros({t.size(0), 1}, opts)}, -1);
  return emb;
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t dim, int64_t freq_dim, double max_period)
    : freq_dim_(freq_dim), max_period_(max_period) {
  fc1 = register_module("fc1", torch::nn::Linear(freq_dim, dim));
  fc2 = register_module("fc2", torch::nn::Linear(dim, dim));
  // DiT initialises the timestep MLP with N(0, 0.02), not xavier.
  normalInit(fc1, 0.02);
  normalInit(fc2, 0.02);
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& t) {
  auto emb = sinusoidalEmbedding(t, freq_dim_, max_period_).to(fc1->weight.scalar_type());
  return fc2(at::silu(fc1(emb)));
}

}  // namespace latentcell::core
