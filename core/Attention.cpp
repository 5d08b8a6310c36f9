// Multi-head attention on at::scaled_dot_product_attention (see Attention.h).
//
// SDPA returns NaN for a query whose keys are all masked (a cell with no expressed genes).
// Such rows are let attend to everything and their output is then zeroed, which keeps the
// result finite and independent of the padded values, without a host sync.
#include "core/Attention.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <torch/nn/options/linear.h>

#include <stdexcept>
#include <string>

namespace latentcell::core {

MultiHeadAttentionImpl::MultiHeadAttentionImpl(const AttentionOptions& options) : options_(options) {
  if (options_.dim <= 0 || options_.heads <= 0 || options_.dim % options_.heads != 0) {
    throw std::invalid_argument("MultiHeadAttention: dim (" + std::to_string(options_.dim) +
                                ") must be a positive multiple of heads (" +
                                std::to_string(options_.heads) + ")");
  }
  if (options_.kv_dim == 0) options_.kv_dim = options_.dim;
  head_dim_ = options_.dim / options_.heads;
  auto linear = [&](int64_t in) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, options_.dim).bias(options_.bias));
  };
  q_proj = register_module("q_proj", linear(options_.dim));
  k_proj = register_module("k_proj", linear(options_.kv_dim));
  v_proj = register_module("v_proj", linear(options_.kv_dim));
  out_proj = register_module("out_proj", linear(options_.dim));
  for (auto* l : {&q_proj, &k_proj, &v_proj, &out_proj}) xavierUniform(*l);
}

at::Tensor buildAttentionMask(const at::Tensor& key_padding_mask, bool causal, int64_t nq,
                              int64_t nk, int64_t past) {
  at::Tensor keep;
  if (key_padding_mask.defined()) {
    keep = key_padding_mask.logical_not().view({key_padding_mask.size(0), 1, 1, nk});
  }
  if (causal) {
    auto opts = at::TensorOptions().dtype(at::kLong).device(
        key_padding_mask.defined() ? key_padding_mask.device() : at::Device(at::kCPU));
    auto key_pos = at::arange(nk, opts).view({1, nk});               // [1, nk]
    auto query_pos = (at::arange(nq, opts) + past).view({nq, 1});    // [nq, 1]
    auto causal_keep = key_pos.le(query_pos).view({1, 1, nq, nk});   // [1, 1, nq, nk]
    keep = keep.defined() ? keep.logical_and(causal_keep) : causal_keep;
  }
  return keep;
}

at::Tensor MultiHeadAttentionImpl::forward(const at::Tensor& query, const at::Tensor& context,
                                           const at::Tensor& key_padding_mask, bool causal,
                                           KvCache* cache) {
  const int64_t batch = query.size(0);
  const int64_t nq = query.size(1);
  const int64_t nk_new = context.size(1);
  const int64_t heads = options_.heads;

  auto q = q_proj(query).view({batch, nq, heads, head_dim_}).transpose(1, 2);      // [b, h, nq, dh]
  auto k = k_proj(context).view({batch, nk_new, heads, head_dim_}).transpose(1, 2);  // [b, h, nk, dh]
  auto v = v_proj(context).view({batch, nk_new, heads, head_dim_}).transpose(1, 2);  // [b, h, nk, dh]

  int64_t past = 0;
  at::Tensor padding = key_padding_mask;
  if (cache != nullptr) {
    past = cache->length();
    if (past > 0) {
      k = at::cat({cache->keys, k}, 2);
      v = at::cat({cache->values, v}, 2);
      if (cache->padding.defined() || padding.defined()) {
        auto opts = at::TensorOptions().dtype(at::kBool).device(query.device());
        auto old_pad = cache->padding.defined() ? cache->padding : at::zeros({batch, past}, opts);
        auto new_pad = padding.defined() ? padding : at::zeros({batch, nk_new}, opts);
        padding = at::cat({old_pad, new_pad}, 1);                                   // [b, past + nk]
      }
    }
    cache->keys = k;
    cache->values = v;
    cache->padding = padding;
  }
  const int64_t nk = k.size(2);
  const double dropout = is_training() ? options_.dropout : 0.0;

  at::Tensor out;
  if (!padding.defined() && (!causal || (past == 0 && nq == nk))) {
    // Fast paths: no mask, or the plain square causal mask SDPA builds itself.
    out = at::scaled_dot_product_attention(q, k, v, {}, dropout, causal);
  } else {
    auto keep = buildAttentionMask(padding, causal, nq, nk, past).to(query.device());  // [b|1, 1, nq, nk]
    at::Tensor any_valid;
    if (padding.defined()) {
      any_valid = keep.any(-1, /*keepdim=*/true);                                   // [b, 1, nq, 1]
      keep = keep.logical_or(any_valid.logical_not());
    }
    out = at::scaled_dot_product_attention(q, k, v, keep, dropout, false);          // [b, h, nq, dh]
    if (any_valid.defined()) out = out * any_valid.to(out.scalar_type());
  }
  out = out.transpose(1, 2).reshape({batch, nq, options_.dim});                    // [b, nq, dim]
  return out_proj(out);
}

}  // namespace latentcell::core
