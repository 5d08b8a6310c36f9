// The scLDM encoder (eq. 5; notes sec. 1): gene tokens -> L latent tokens.
//
//   tokens = CountEmbedding(gene vectors, counts)          [batch, n, E]
//   h      = MCAB_S(tokens, padding mask)                   [batch, L, E]  S: L learned pseudo-inputs
//   h      = T_k(... T_1(h))                                self-attention over the L tokens
//   z      = Linear(E -> d)(h)  (-> LayerNorm w/o affine)   [batch, L, d]
//
// The pooling is the only step that sees the genes; its queries are parameters, so z does not
// depend on the order of the tokens, and with the padding mask (the default) not on how many PAD
// positions follow them either (paper App. C, Property 3). Everything after it acts on the L
// latent tokens only. The gene vectors come from the caller's GeneEmbedding (the table the decoder
// shares), so this module holds no table.
#pragma once

#include "core/Mcab.h"
#include "core/TransformerBlock.h"
#include "models/GeneEmbedding.h"
#include "models/McabConfig.h"

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>

namespace latentcell::models {

class McabEncoderImpl : public torch::nn::Module {
 public:
  explicit McabEncoderImpl(const McabConfig& config);
  // gene_vectors [batch, n, E], counts [batch, n], padding_mask [batch, n] bool (true = PAD;
  // optional) -> [batch, L, d]
  at::Tensor forward(const at::Tensor& gene_vectors, const at::Tensor& counts,
                     const at::Tensor& padding_mask = {});

  CountEmbedding count_embedding{nullptr};
  core::Mcab pool{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear out_proj{nullptr};
  torch::nn::LayerNorm out_norm{nullptr};  // only with latent_norm

 private:
  bool mask_padding_;
};
TORCH_MODULE(McabEncoder);

}  // namespace latentcell::models
