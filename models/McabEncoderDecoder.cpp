// MCAB encoder/decoder pair with a shared gene table (see McabEncoderDecoder.h).
#include "models/McabEncoderDecoder.h"

#include <ATen/ATen.h>

namespace latentcell::models {

McabEncoderDecoder::McabEncoderDecoder(int64_t num_genes, const McabConfig& config) : config_(config) {
  core::validateConfig(config_);
  genes = register_module("genes", GeneEmbedding(num_genes, config_.width));
  encoder = register_module("encoder", McabEncoder(config_));
  decoder = register_module("decoder", McabDecoder(config_));
}

at::Tensor McabEncoderDecoder::encode(const CellBatch& batch) {
  checkTokens(batch, numGenes(), "MCAB encoder");
  const auto padding = batch.padding_mask.defined() ? batch.padding_mask : batch.gene_ids.eq(0);
  return encoder(genes(batch.gene_ids), batch.counts, padding);  // [b, L, d]
}

at::Tensor McabEncoderDecoder::decode(const at::Tensor& latent, const at::Tensor& gene_ids) {
  checkDecodeInputs(latent, gene_ids, latentTokens(), latentDim(), numGenes(), "MCAB decoder");
  return decoder(latent, genes(gene_ids));  // [b, n, E]
}

}  // namespace latentcell::models
