// MCAB encoder (see McabEncoder.h).
#include "models/McabEncoder.h"

#include "core/Init.h"
#include "core/Norms.h"

#include <ATen/ATen.h>
#include <torch/nn/options/linear.h>

namespace latentcell::models {

McabEncoderImpl::McabEncoderImpl(const McabConfig& config) : mask_padding_(config.mask_padding) {
  core::validateConfig(config);
  const auto ff = core::parseFeedForwardKind(config.feed_forward);
  count_embedding = register_module(
      "count_embedding",
      CountEmbedding(parseCountEmbeddingKind(config.count_embedding), config.width, config.count_mlp_hidden));
  pool = register_module("pool", core::Mcab(core::McabOptions{config.width, config.width, config.cross_heads,
                                                              config.latent_tokens, ff, config.mlp_ratio,
                                                              config.multiple_of}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.encoder_blocks; ++i) {
    blocks->push_back(core::TransformerBlock(core::TransformerBlockOptions{
        config.width, config.heads, ff, config.mlp_ratio, config.multiple_of, config.dropout}));
  }
  out_proj = register_module("out_proj", torch::nn::Linear(config.width, config.latent_dim));
  core::xavierUniform(out_proj);
  if (config.latent_norm) out_norm = register_module("out_norm", core::makeLayerNorm(config.latent_dim, false));
}

at::Tensor McabEncoderImpl::forward(const at::Tensor& gene_vectors, const at::Tensor& counts,
                                    const at::Tensor& padding_mask) {
  auto tokens = count_embedding(gene_vectors, counts);                              // [b, n, E]
  auto h = pool(tokens, mask_padding_ ? padding_mask : at::Tensor());               // [b, L, E]
  for (const auto& block : *blocks) h = block->as<core::TransformerBlock>()->forward(h);  // [b, L, E]
  auto z = out_proj(h);                                                             // [b, L, d]
  return out_norm ? out_norm(z) : z;
}

}  // namespace latentcell::models
