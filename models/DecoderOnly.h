// Decoder-only mode as an EncoderDecoder: a fixed per-cell embedding (FixedEmbeddingEncoder) with a
// trained decoder, the reconstruction benchmark paper's way of asking how much of a cell a frozen
// embedding keeps (sec. 3.2: an MLP decoder matching the end-to-end models). The MCAB decoder is
// offered too, with its own gene table (there is no encoder to share one with).
//
// The latent size comes from the embedding (width D read as L tokens of D / L), so the decoder
// section's latent_dim / latent_tokens are replaced by it.
#pragma once

#include "core/Config.h"
#include "models/EncoderDecoder.h"
#include "models/FixedEmbeddingEncoder.h"
#include "models/GeneEmbedding.h"
#include "models/McabConfig.h"
#include "models/McabDecoder.h"
#include "models/MlpConfig.h"
#include "models/MlpEncoderDecoder.h"

namespace latentcell::models {

struct DecoderOnlyConfig : core::ConfigSection {
  int64_t latent_tokens = 1;   // L: the embedding is read as L tokens of D / L
  std::string decoder = "mlp";  // mlp | mcab
  MlpConfig mlp;               // decoder = mlp: hidden (reversed), norm, activation, output_width
  McabConfig mcab;             // decoder = mcab: width, heads, decoder_blocks, ...

  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

class DecoderOnly : public EncoderDecoder {
 public:
  // embedding_dim: width D of the data's embedding.
  DecoderOnly(int64_t num_genes, int64_t embedding_dim, const DecoderOnlyConfig& config);

  at::Tensor encode(const CellBatch& batch) override;
  at::Tensor decode(const at::Tensor& latent, const at::Tensor& gene_ids) override;

  int64_t numGenes() const override { return num_genes_; }
  int64_t latentTokens() const override { return encoder->tokens(); }
  int64_t latentDim() const override { return encoder->tokenDim(); }
  int64_t outputWidth() const override;

  FixedEmbeddingEncoder encoder{nullptr};
  MlpDecoder mlp_decoder{nullptr};    // decoder = mlp
  GeneEmbedding genes{nullptr};       // decoder = mcab
  McabDecoder mcab_decoder{nullptr};  // decoder = mcab

 private:
  int64_t num_genes_;
  DecoderOnlyConfig config_;
};

}  // namespace latentcell::models
