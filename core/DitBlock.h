// DiT block with adaLN-Zero conditioning and the DiT final layer (Peebles & Xie; notes sec. 4).
//
//   shift/scale/gate (x2) = Linear(SiLU(c))               zero-initialised
//   x += gate_a * Attn(modulate(LN(x), shift_a, scale_a))
//   x += gate_m * MLP(modulate(LN(x), shift_m, scale_m))  LN without affine, eps 1e-6
//
// Because the modulation is zero at initialisation every block starts as the identity, which is
// what makes deep conditional priors train stably. The conditioning c is one vector per sample
// ([batch, dim]) or per token ([batch, n, dim]).
#pragma once

#include "core/Attention.h"
#include "core/FeedForward.h"

#include <torch/nn/modules/normalization.h>

namespace latentcell::core {

// x * (1 + scale) + shift, with shift/scale broadcast over tokens.
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);

struct DitBlockOptions {
  int64_t dim = 0;
  int64_t heads = 1;
  double mlp_ratio = 4.0;
  double dropout = 0.0;
};

class DitBlockImpl : public torch::nn::Module {
 public:
  explicit DitBlockImpl(const DitBlockOptions& options);
  // x [batch, n, dim], c [batch, dim] or [batch, n, dim] -> [batch, n, dim]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c,
                     const at::Tensor& key_padding_mask = {}, bool causal = false,
                     KvCache* cache = nullptr);

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  MultiHeadAttention attn{nullptr};
  Mlp mlp{nullptr};
  torch::nn::Linear ada_ln{nullptr};  // dim -> 6 dim
};
TORCH_MODULE(DitBlock);

class DitFinalLayerImpl : public torch::nn::Module {
 public:
  DitFinalLayerImpl(int64_t dim, int64_t out_dim);
  // x [batch, n, dim], c [batch, dim] or [batch, n, dim] -> [batch, n, out_dim]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c);

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear ada_ln{nullptr};  // dim -> 2 dim, zero-initialised
  torch::nn::Linear linear{nullptr};  // dim -> out_dim, zero-initialised
};
TORCH_MODULE(DitFinalLayer);

}  // namespace latentcell::core
