// Decoder-only mode (see DecoderOnly.h).
#include "models/DecoderOnly.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace latentcell::models {

void DecoderOnlyConfig::visit(core::ConfigVisitor& v) {
  v.field("latent_tokens", latent_tokens, "the fixed embedding is read as this many latent tokens");
  v.choice("decoder", decoder, {"mlp", "mcab"}, "decoder trained on the fixed embedding");
  v.section("mlp", mlp, "MLP decoder (latent_dim is taken from the embedding)");
  v.section("mcab", mcab, "MCAB decoder (latent_tokens and latent_dim are taken from the embedding)");
}

void DecoderOnlyConfig::validate() const {
  if (latent_tokens <= 0) reject("latent_tokens", "must be positive");
  if (decoder == "mlp" && latent_tokens != 1) {
    reject("latent_tokens", "must be 1 with the mlp decoder (it reads one latent vector)");
  }
}

DecoderOnly::DecoderOnly(int64_t num_genes, int64_t embedding_dim, const DecoderOnlyConfig& config)
    : num_genes_(num_genes), config_(config) {
  core::validateConfig(config_);
  if (num_genes <= 0) throw std::invalid_argument("DecoderOnly: num_genes must be positive");
  encoder = register_module("encoder", FixedEmbeddingEncoder(embedding_dim, config_.latent_tokens));
  if (config_.decoder == "mlp") {
    mlp_decoder = register_module("decoder", MlpDecoder(num_genes, encoder->tokenDim(), config_.mlp));
  } else {
    McabConfig mcab = config_.mcab;
    mcab.latent_tokens = encoder->tokens();
    mcab.latent_dim = encoder->tokenDim();
    genes = register_module("genes", GeneEmbedding(num_genes, mcab.width));
    mcab_decoder = register_module("decoder", McabDecoder(mcab));
  }
}

int64_t DecoderOnly::outputWidth() const {
  return mlp_decoder ? config_.mlp.output_width : config_.mcab.width;
}

at::Tensor DecoderOnly::encode(const CellBatch& batch) {
  return encoder(batch.embedding);  // [b, L, D / L]
}

at::Tensor DecoderOnly::decode(const at::Tensor& latent, const at::Tensor& gene_ids) {
  checkDecodeInputs(latent, gene_ids, latentTokens(), latentDim(), num_genes_, "decoder-only decoder");
  if (mlp_decoder) return mlp_decoder(latent.squeeze(1), gene_ids);  // [b, n, w]
  return mcab_decoder(latent, genes(gene_ids));                        // [b, n, E]
}

}  // namespace latentcell::models
