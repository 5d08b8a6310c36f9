// MCAB encoder/decoder configuration (see McabConfig.h).
#include "models/McabConfig.h"

#include <fmt/format.h>

namespace latentcell::models {

void McabConfig::visit(core::ConfigVisitor& v) {
  v.field("width", width, "gene embedding and model width E");
  v.field("heads", heads, "self-attention heads of the transformer blocks");
  v.field("cross_heads", cross_heads, "attention heads of the MCAB pooling (encoder) and unpooling (decoder)");
  v.field("encoder_blocks", encoder_blocks, "transformer blocks over the latent tokens in the encoder");
  v.field("decoder_blocks", decoder_blocks, "transformer blocks over the latent tokens in the decoder");
  v.field("latent_tokens", latent_tokens, "number of latent tokens L (MCAB pseudo-inputs)");
  v.field("latent_dim", latent_dim, "width d of each latent token");
  v.choice("count_embedding", count_embedding, {"concat", "log1p", "mlp"},
           "how counts enter the gene tokens: concat (scLDM paper), log1p (scLDM code), mlp (ExpressionVAE)");
  v.field("count_mlp_hidden", count_mlp_hidden, "hidden width of the mlp count embedding (0 = width)");
  v.choice("feed_forward", feed_forward, {"gelu", "gelu_tanh", "swiglu"}, "feed-forward network of every block");
  v.field("mlp_ratio", mlp_ratio, "hidden width of gelu feed-forwards as a multiple of width");
  v.field("multiple_of", multiple_of, "swiglu hidden width is rounded up to a multiple of this");
  v.field("mask_padding", mask_padding, "mask PAD tokens in the encoder's pooling (false = public scLDM code)");
  v.field("latent_norm", latent_norm, "LayerNorm without affine on the encoder output");
  v.field("dropout", dropout, "attention dropout of the transformer blocks");
}

void McabConfig::validate() const {
  if (width <= 0) reject("width", "must be positive");
  if (heads <= 0) reject("heads", "must be positive");
  if (cross_heads <= 0) reject("cross_heads", "must be positive");
  if (width % heads != 0) reject("heads", fmt::format("must divide width ({})", width));
  if (width % cross_heads != 0) reject("cross_heads", fmt::format("must divide width ({})", width));
  if (encoder_blocks < 0) reject("encoder_blocks", "must be >= 0");
  if (decoder_blocks < 0) reject("decoder_blocks", "must be >= 0");
  if (latent_tokens <= 0) reject("latent_tokens", "must be positive");
  if (latent_dim <= 0) reject("latent_dim", "must be positive");
  if (count_mlp_hidden < 0) reject("count_mlp_hidden", "must be >= 0");
  if (!(mlp_ratio > 0)) reject("mlp_ratio", "must be positive");
  if (multiple_of <= 0) reject("multiple_of", "must be positive");
  if (!(dropout >= 0 && dropout < 1)) reject("dropout", "must be in [0, 1)");
}

}  // namespace latentcell::models
