// Multi-head attention, self and cross, on at::scaled_dot_product_attention.
//
// One module serves the encoder's MCAB pooling (cross-attention onto padded gene tokens), the
// transformer and DiT blocks (self-attention, optionally causal) and autoregressive sampling
// (a KV cache that grows one step at a time). Masks follow PyTorch's nn.MultiheadAttention:
// key_padding_mask is true where a key is padding and must be ignored.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace latentcell::core {

// Keys and values of the tokens seen so far, for incremental decoding.
struct KvCache {
  at::Tensor keys;     // [batch, heads, past, head_dim]
  at::Tensor values;   // [batch, heads, past, head_dim]
  at::Tensor padding;  // [batch, past] bool, true = padding; undefined when no key was padding
  int64_t length() const { return keys.defined() ? keys.size(2) : 0; }
  void reset() { keys = values = padding = at::Tensor(); }
};

struct AttentionOptions {
  int64_t dim = 0;        // query width and output width
  int64_t heads = 1;
  int64_t kv_dim = 0;     // width of the key/value input; 0 = dim
  bool bias = true;
  double dropout = 0.0;   // attention-probability dropout, training only
};

class MultiHeadAttentionImpl : public torch::nn::Module {
 public:
  explicit MultiHeadAttentionImpl(const AttentionOptions& options);

  // query [batch, nq, dim], context [batch, nk, kv_dim] -> [batch, nq, dim].
  // causal: query i may see key j only if j <= past + i, where past = cache length.
  // cache: the new keys/values are appended to it and attention runs over all of it.
  at::Tensor forward(const at::Tensor& query, const at::Tensor& context,
                     const at::Tensor& key_padding_mask = {}, bool causal = false,
                     KvCache* cache = nullptr);

  const AttentionOptions& options() const { return options_; }

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  AttentionOptions options_;
  int64_t head_dim_ = 0;
};
TORCH_MODULE(MultiHeadAttention);

// The boolean attention mask ([batch or 1, 1, nq, nk], true = may attend) combining key padding
// and causality, or an undefined tensor when neither applies. Exposed for tests and for blocks
// that attend through other kernels.
at::Tensor buildAttentionMask(const at::Tensor& key_padding_mask, bool causal, int64_t nq,
                              int64_t nk, int64_t past);

}  // namespace latentcell::core
