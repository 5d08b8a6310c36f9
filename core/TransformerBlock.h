// Pre-LN transformer block: x += Attn(LN(x)); x += FF(LN(x)).
//
// The self-attention stack of the MCAB encoder and decoder; causal masking and the KV cache are
// passed through to the attention so the same block serves autoregressive models.
#pragma once

#include "core/Attention.h"
#include "core/FeedForward.h"

#include <torch/nn/modules/normalization.h>

namespace latentcell::core {

struct TransformerBlockOptions {
  int64_t dim = 0;
  int64_t heads = 1;
  FeedForwardKind feed_forward = FeedForwardKind::SwiGlu;
  double mlp_ratio = 4.0;    // GELU MLPs
  int64_t multiple_of = 64;  // SwiGLU hidden rounding
  double dropout = 0.0;      // attention dropout
};

class TransformerBlockImpl : public torch::nn::Module {
 public:
  explicit TransformerBlockImpl(const TransformerBlockOptions& options);
  // x [batch, n, dim] -> [batch, n, dim]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& key_padding_mask = {},
                     bool causal = false, KvCache* cache = nullptr);

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  MultiHeadAttention attn{nullptr};
  FeedForward ff{nullptr};
};
TORCH_MODULE(TransformerBlock);

}  // namespace latentcell::core
