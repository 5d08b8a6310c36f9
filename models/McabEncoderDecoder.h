// The MCAB family as an EncoderDecoder: one gene table, the MCAB encoder reading it for the input
// tokens, and the MCAB decoder reading it for its queries (scLDM sec. 3.2: "E is the embedding used
// in the encoder network"). Owning the table here keeps it a single parameter in the state dict
// ("genes.weight") and in the optimizer.
#pragma once

#include "models/EncoderDecoder.h"
#include "models/GeneEmbedding.h"
#include "models/McabConfig.h"
#include "models/McabDecoder.h"
#include "models/McabEncoder.h"

namespace latentcell::models {

class McabEncoderDecoder : public EncoderDecoder {
 public:
  McabEncoderDecoder(int64_t num_genes, const McabConfig& config);

  at::Tensor encode(const CellBatch& batch) override;
  at::Tensor decode(const at::Tensor& latent, const at::Tensor& gene_ids) override;

  int64_t numGenes() const override { return genes->numGenes(); }
  int64_t latentTokens() const override { return config_.latent_tokens; }
  int64_t latentDim() const override { return config_.latent_dim; }
  int64_t outputWidth() const override { return config_.width; }

  GeneEmbedding genes{nullptr};
  McabEncoder encoder{nullptr};
  McabDecoder decoder{nullptr};

 private:
  McabConfig config_;
};

}  // namespace latentcell::models
