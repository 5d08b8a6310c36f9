// DiT block and final layer (see DitBlock.h).
#include "core/DitBlock.h"

#include "core/Init.h"
#include "core/Norms.h"

#include <ATen/ATen.h>
#include <torch/nn/options/linear.h>

#include <cmath>

namespace latentcell::core {
namespace {

// c [batch, dim] -> [batch, 1, dim] so that it broadcasts over tokens; per-token c passes through.
at::Tensor perToken(const at::Tensor& c) { return c.dim() == 2 ? c.unsqueeze(1) : c; }

}  // namespace

at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return x * (1 + scale) + shift;
}

DitBlockImpl::DitBlockImpl(const DitBlockOptions& o) {
  norm1 = register_module("norm1", makeLayerNorm(o.dim, /*affine=*/false, 1e-6));
  attn = register_module("attn", MultiHeadAttention(AttentionOptions{o.dim, o.heads, 0, true, o.dropout}));
  norm2 = register_module("norm2", makeLayerNorm(o.dim, /*affine=*/false, 1e-6));
  const auto hidden = static_cast<int64_t>(std::llround(o.dim * o.mlp_ratio));
  mlp = register_module("mlp", Mlp(o.dim, hidden, Activation::GeluTanh));
  ada_ln = register_module("ada_ln", torch::nn::Linear(o.dim, 6 * o.dim));
  zeroInit(ada_ln);
}

at::Tensor DitBlockImpl::forward(const at::Tensor& x, const at::Tensor& c,
                                 const at::Tensor& key_padding_mask, bool causal, KvCache* cache) {
  auto mod = ada_ln(at::silu(perToken(c))).chunk(6, -1);  // 6 x [batch, 1|n, dim]
  const auto& shift_a = mod[0];
  const auto& scale_a = mod[1];
  const auto& gate_a = mod[2];
  const auto& shift_m = mod[3];
  const auto& scale_m = mod[4];
  const auto& gate_m = mod[5];
  auto h = modulate(norm1(x), shift_a, scale_a);
  auto y = x + gate_a * attn(h, h, key_padding_mask, causal, cache);
  return y + gate_m * mlp(modulate(norm2(y), shift_m, scale_m));
}

DitFinalLayerImpl::DitFinalLayerImpl(int64_t dim, int64_t out_dim) {
  norm = register_module("norm", makeLayerNorm(dim, /*affine=*/false, 1e-6));
  ada_ln = register_module("ada_ln", torch::nn::Linear(dim, 2 * dim));
  linear = register_module("linear", torch::nn::Linear(dim, out_dim));
  zeroInit(ada_ln);
  zeroInit(linear);
}

at::Tensor DitFinalLayerImpl::forward(const at::Tensor& x, const at::Tensor& c) {
  auto mod = ada_ln(at::silu(perToken(c))).chunk(2, -1);  // 2 x [batch, 1|n, dim]
  return linear(modulate(norm(x), mod[0], mod[1]));
}

}  // namespace latentcell::core
