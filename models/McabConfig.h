// Hyper-parameters of the MCAB encoder/decoder pair (scLDM; notes sec. 1).
//
// One section for both halves because they share the width and the gene table: the decoder's
// queries are the encoder's gene embeddings, so the two cannot differ in width. Defaults are the
// public scLDM configuration (E = 128, M = 128 latent tokens, E_lat = 16, 2 blocks, 4 heads,
// 1 cross-attention head, SwiGLU); the count embedding defaults to the public code's log1p form
// and the padding mask is on (the public code does not mask PAD tokens: mask_padding = false).
#pragma once

#include "core/Config.h"

#include <cstdint>
#include <string>

namespace latentcell::models {

struct McabConfig : core::ConfigSection {
  int64_t width = 128;          // E: gene embedding and model width
  int64_t heads = 4;            // self-attention heads of the transformer blocks
  int64_t cross_heads = 1;      // heads of the MCAB pooling and unpooling
  int64_t encoder_blocks = 2;
  int64_t decoder_blocks = 2;
  int64_t latent_tokens = 128;  // L (M in the paper): MCAB pseudo-inputs
  int64_t latent_dim = 16;      // d (E_lat): width of each latent token
  std::string count_embedding = "log1p";
  int64_t count_mlp_hidden = 0;  // hidden width of the mlp count embedding; 0 = width
  std::string feed_forward = "swiglu";
  double mlp_ratio = 4.0;        // gelu feed-forward hidden = mlp_ratio * width
  int64_t multiple_of = 64;      // swiglu hidden rounding
  bool mask_padding = true;
  bool latent_norm = false;      // LayerNorm without affine on the latent (the public code's deterministic AE)
  double dropout = 0.0;          // attention dropout of the transformer blocks

  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

}  // namespace latentcell::models
