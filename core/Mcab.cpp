// MCAB cross-attention block (see Mcab.h).
#include "core/Mcab.h"

#include "core/Norms.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <stdexcept>

namespace latentcell::core {

McabImpl::McabImpl(const McabOptions& options) : options_(options) {
  if (options_.kv_dim == 0) options_.kv_dim = options_.dim;
  if (options_.num_queries > 0) {
    // Pseudo-inputs start small (std 0.02, as token embeddings in GPT/DiT) so that LN_q, not the
    // initial scale, sets their magnitude.
    pseudo_inputs = register_parameter(
        "pseudo_inputs", torch::nn::init::normal_(at::empty({options_.num_queries, options_.dim}), 0.0, 0.02));
  }
  norm_q = register_module("norm_q", makeLayerNorm(options_.dim));
  norm_kv = register_module("norm_kv", makeLayerNorm(options_.kv_dim));
  attn = register_module("attn", MultiHeadAttention(AttentionOptions{
                                     options_.dim, options_.heads, options_.kv_dim, true, 0.0}));
  norm_ff = register_module("norm_ff", makeLayerNorm(options_.dim));
  ff = register_module("ff", FeedForward(options_.feed_forward, options_.dim, options_.mlp_ratio,
                                         options_.multiple_of));
}

at::Tensor McabImpl::forward(const at::Tensor& kv, const at::Tensor& key_padding_mask,
                             const at::Tensor& queries) {
  const int64_t batch = kv.size(0);
  at::Tensor q;
  if (pseudo_inputs.defined()) {
    if (queries.defined()) throw std::invalid_argument("Mcab: block has pseudo-inputs; do not pass queries");
    q = pseudo_inputs.unsqueeze(0).expand({batch, -1, -1});                  // [b, m, dim]
  } else {
    if (!queries.defined()) throw std::invalid_argument("Mcab: block without pseudo-inputs needs queries");
    q = queries.dim() == 2 ? queries.unsqueeze(0).expand({batch, -1, -1}) : queries;  // [b, m, dim]
  }
  auto x = q + attn(norm_q(q), norm_kv(kv), key_padding_mask);               // [b, m, dim]
  return x + ff(norm_ff(x));
}

}  // namespace latentcell::core
