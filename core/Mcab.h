// MCAB, the multi-head cross-attention block of scLDM (eq. 2-4; notes sec. 1).
//
//   q = S (M learned pseudo-inputs) or given queries
//   x = q + CrossAttn(LN_q(q), LN_kv(kv));  x = x + FF(LN(x))
//
// With learned pseudo-inputs it pools a variable-size, padded set (the expressed genes of a cell)
// into M tokens and is invariant to the order of that set and to the amount of masked padding.
// With given queries (gene embeddings) it unpools latent tokens onto any requested genes and is
// equivariant to the order of the queries.
#pragma once

#include "core/Attention.h"
#include "core/FeedForward.h"

#include <torch/nn/modules/normalization.h>

namespace latentcell::core {

struct McabOptions {
  int64_t dim = 0;          // query and output width
  int64_t kv_dim = 0;       // width of the set being attended; 0 = dim
  int64_t heads = 1;
  int64_t num_queries = 0;  // M learned pseudo-inputs; 0 = queries are given to forward()
  FeedForwardKind feed_forward = FeedForwardKind::SwiGlu;
  double mlp_ratio = 4.0;
  int64_t multiple_of = 64;
};

class McabImpl : public torch::nn::Module {
 public:
  explicit McabImpl(const McabOptions& options);

  // kv [batch, n, kv_dim]; key_padding_mask [batch, n] true = padding;
  // queries [batch, m, dim] or [m, dim] when the block has no pseudo-inputs.
  // Returns [batch, m, dim] (m = num_queries with pseudo-inputs).
  at::Tensor forward(const at::Tensor& kv, const at::Tensor& key_padding_mask = {},
                     const at::Tensor& queries = {});

  at::Tensor pseudo_inputs;  // [num_queries, dim], undefined with given queries
  torch::nn::LayerNorm norm_q{nullptr}, norm_kv{nullptr}, norm_ff{nullptr};
  MultiHeadAttention attn{nullptr};
  FeedForward ff{nullptr};

 private:
  McabOptions options_;
};
TORCH_MODULE(Mcab);

}  // namespace latentcell::core
