// The scLDM decoder (eq. 7; notes sec. 1): L latent tokens -> one output per requested gene.
//
//   h   = Linear(d -> E)(z)                  [batch, L, E]
//   h   = T_k(... T_1(h))                    self-attention over the L tokens
//   out = MCAB_{E_I}(h)                      [batch, n, E]  queries: the gene embeddings E_I
//
// The unpooling's queries are the shared gene-table rows of the genes to decode, so any subset of
// genes in any order can be asked for, and each output row depends only on its own query and the
// latent: permuting the genes permutes the outputs (paper App. C, Property 4). The latent tokens
// are never masked (there is no padding among them).
#pragma once

#include "core/Mcab.h"
#include "core/TransformerBlock.h"
#include "models/McabConfig.h"

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

namespace latentcell::models {

class McabDecoderImpl : public torch::nn::Module {
 public:
  explicit McabDecoderImpl(const McabConfig& config);
  // latent [batch, L, d]; gene_queries [n, E] (the same genes for every cell) or [batch, n, E]
  // -> [batch, n, E]
  at::Tensor forward(const at::Tensor& latent, const at::Tensor& gene_queries);

  torch::nn::Linear in_proj{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  core::Mcab unpool{nullptr};
};
TORCH_MODULE(McabDecoder);

}  // namespace latentcell::models
