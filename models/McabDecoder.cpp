// MCAB decoder (see McabDecoder.h).
#include "models/McabDecoder.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <torch/nn/options/linear.h>

namespace latentcell::models {

McabDecoderImpl::McabDecoderImpl(const McabConfig& config) {
  core::validateConfig(config);
  const auto ff = core::parseFeedForwardKind(config.feed_forward);
  in_proj = register_module("in_proj", torch::nn::Linear(config.latent_dim, config.width));
  core::xavierUniform(in_proj);
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.decoder_blocks; ++i) {
    blocks->push_back(core::TransformerBlock(core::TransformerBlockOptions{
        config.width, config.heads, ff, config.mlp_ratio, config.multiple_of, config.dropout}));
  }
  unpool = register_module("unpool", core::Mcab(core::McabOptions{config.width, config.width, config.cross_heads,
                                                                  /*num_queries=*/0, ff, config.mlp_ratio,
                                                                  config.multiple_of}));
}

at::Tensor McabDecoderImpl::forward(const at::Tensor& latent, const at::Tensor& gene_queries) {
  auto h = in_proj(latent);                                                         // [b, L, E]
  for (const auto& block : *blocks) h = block->as<core::TransformerBlock>()->forward(h);  // [b, L, E]
  return unpool(h, at::Tensor(), gene_queries);                                     // [b, n, E]
}

}  // namespace latentcell::models
