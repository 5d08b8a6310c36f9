// Pre-LN transformer block (see TransformerBlock.h).
#include "core/TransformerBlock.h"

#include "core/Norms.h"

namespace latentcell::core {

TransformerBlockImpl::TransformerBlockImpl(const TransformerBlockOptions& o) {
  norm1 = register_module("norm1", makeLayerNorm(o.dim));
  attn = register_module("attn", MultiHeadAttention(AttentionOptions{o.dim, o.heads, 0, true, o.dropout}));
  norm2 = register_module("norm2", makeLayerNorm(o.dim));
  ff = register_module("ff", FeedForward(o.feed_forward, o.dim, o.mlp_ratio, o.multiple_of));
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& key_padding_mask,
                                         bool causal, KvCache* cache) {
  auto h = norm1(x);
  auto y = x + attn(h, h, key_padding_mask, causal, cache);
  return y + ff(norm2(y));
}

}  // namespace latentcell::core
