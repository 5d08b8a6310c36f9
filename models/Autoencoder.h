// The stage-1 autoencoder: an encoder/decoder family, a bottleneck between its halves and an output
// head on the decoder's per-gene outputs (architecture sketch: GeneEmbedding -> McabEncoder ->
// Bottleneck -> McabDecoder -> Head).
//
// The three parts are independent experimental axes (ExpressionVAE sec. 4.2; the reconstruction
// benchmark paper), so this class only wires them together and checks that their widths agree;
// everything a sweep changes lives in the `model:`, `bottleneck:` and `head:` config sections.
// PCA is the one family without a bottleneck or a head: it is fitted, not trained, and decodes
// straight to log1p-normalised values, which is what the reconstruction comparison needs from it.
#pragma once

#include "core/Config.h"
#include "heads/HeadConfig.h"
#include "models/BottleneckConfig.h"
#include "models/EncoderDecoder.h"
#include "models/McabConfig.h"
#include "models/MlpConfig.h"
#include "models/PcaBaseline.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::models {

struct AutoencoderConfig : core::ConfigSection {
  std::string family = "mcab";  // mcab | mlp | pca
  McabConfig mcab;
  MlpConfig mlp;
  PcaConfig pca;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct AutoencoderLoss {
  std::vector<std::pair<std::string, at::Tensor>> terms;  // "loss" (optimised) first, then the parts
};

class Autoencoder : public torch::nn::Module {
 public:
  Autoencoder(int64_t num_genes, const AutoencoderConfig& model, const BottleneckConfig& bottleneck,
              const heads::HeadConfig& head);

  // The training objective on a batch whose decoded genes are all genes (ids 1..numGenes()):
  // head loss + the bottleneck's weighted auxiliary loss, with their parts for logging.
  AutoencoderLoss loss(const CellBatch& batch);

  // What a prior models (Gaussian means in eval mode, FSQ code indices, or the raw latent).
  at::Tensor encodeLatent(const CellBatch& batch);
  // Predictions for every gene, [batch, genes], from a latent in encodeLatent's form.
  at::Tensor predict(const at::Tensor& latent, const at::Tensor& library, heads::PredictMode mode,
                     std::optional<at::Generator> generator = std::nullopt);
  // The space of predict()'s values: counts for count heads, log1p-normalised otherwise.
  heads::ValueSpace valueSpace() const;
  // The NB head's gene-wise inverse dispersion theta_g for every gene, when the head is NB with
  // gene-specific dispersion (reconstruction metrics read it as var['nb_theta']); empty otherwise.
  std::vector<float> geneDispersion() const;
  // True when the head models raw integer counts (the data must hold counts).
  bool needsIntegerCounts() const;
  // Fits data-dependent state before training (PCA; ce-quant bins; modeled library prior).
  void fitToData(const data::CsrMatrix& train_counts);
  bool trainable() const { return pca_ == nullptr; }
  bool discreteLatent() const { return bottleneck_ && bottleneck_->discrete(); }

  int64_t numGenes() const { return family_->numGenes(); }
  int64_t latentTokens() const { return family_->latentTokens(); }
  // Width of a continuous latent, or the codebook size when discrete.
  int64_t latentWidth() const;

 private:
  at::Tensor allGenes(const at::Device& device) const;  // [genes] ids 1..G

  std::shared_ptr<EncoderDecoder> family_;
  std::shared_ptr<PcaBaseline> pca_;  // family pca (also held by family_)
  std::shared_ptr<Bottleneck> bottleneck_;
  std::shared_ptr<heads::OutputHead> head_;
};

}  // namespace latentcell::models
