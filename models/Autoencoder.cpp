// The stage-1 autoencoder (see Autoencoder.h).
#include "models/Autoencoder.h"

#include "data/Preprocess.h"
#include "heads/NegativeBinomialHead.h"
#include "models/McabEncoderDecoder.h"
#include "models/MlpEncoderDecoder.h"

#include <torch/torch.h>

#include <stdexcept>

namespace latentcell::models {

void AutoencoderConfig::visit(core::ConfigVisitor& v) {
  v.choice("family", family, {"mcab", "mlp", "pca"}, "encoder/decoder family");
  v.section("mcab", mcab, "MCAB cross-attention encoder/decoder (family mcab)");
  v.section("mlp", mlp, "dense MLP autoencoder / scVI-like encoder and decoder (family mlp)");
  v.section("pca", pca, "PCA baseline, fitted on log1p-normalised training cells (family pca)");
}

void AutoencoderConfig::validate() const {}

Autoencoder::Autoencoder(int64_t num_genes, const AutoencoderConfig& model, const BottleneckConfig& bottleneck,
                         const heads::HeadConfig& head) {
  if (model.family == "pca") {
    pca_ = std::make_shared<PcaBaseline>(num_genes, model.pca);
    family_ = pca_;
    register_module("family", family_);
    return;
  }
  if (model.family == "mcab") {
    family_ = std::make_shared<McabEncoderDecoder>(num_genes, model.mcab);
  } else {
    family_ = std::make_shared<MlpEncoderDecoder>(num_genes, model.mlp);
  }
  register_module("family", family_);
  bottleneck_ = register_module("bottleneck", makeBottleneck(bottleneck, family_->latentDim()));
  if (bottleneck_->outputDim() != family_->latentDim()) {
    throw std::invalid_argument("bottleneck " + std::string(bottleneck_->kind()) + " returns width " +
                                std::to_string(bottleneck_->outputDim()) + " but the decoder reads " +
                                std::to_string(family_->latentDim()) + "; leave bottleneck.latent_dim at 0");
  }
  heads::HeadDims dims;
  dims.width = family_->outputWidth();
  dims.n_genes = num_genes;
  dims.cell_dim = family_->latentDim();
  head_ = register_module("head", heads::makeHead(head, dims));
}

at::Tensor Autoencoder::allGenes(const at::Device& device) const {
  return torch::arange(1, numGenes() + 1, torch::TensorOptions().dtype(torch::kLong).device(device));
}

AutoencoderLoss Autoencoder::loss(const CellBatch& batch) {
  if (!trainable()) throw std::logic_error("the PCA family is fitted, not trained");
  const auto device = batch.gene_ids.device();
  auto h = family_->encode(batch);             // [batch, L, d]
  auto bn = bottleneck_->forward(h);           // z [batch, L, d]
  auto genes = allGenes(device);               // [G]
  auto out = family_->decode(bn.z, genes);     // [batch, G, width]
  auto counts = denseCounts(batch, numGenes());  // [batch, G]
  heads::HeadContext context;
  context.gene_ids = genes;
  context.library = batch.library.defined() ? batch.library : counts.sum(1);
  context.cell_features = bn.z.mean(1);        // [batch, d]
  auto head_loss = head_->loss(out, counts, context);
  AutoencoderLoss result;
  result.terms.emplace_back("loss", head_loss.total + bn.loss);
  for (auto& t : head_loss.terms) result.terms.push_back(std::move(t));
  for (auto& t : bn.terms) result.terms.push_back(std::move(t));
  return result;
}

at::Tensor Autoencoder::encodeLatent(const CellBatch& batch) {
  auto h = family_->encode(batch);  // [batch, L, d]
  if (!bottleneck_) return h;
  return bottleneck_->forward(h).latent;
}

at::Tensor Autoencoder::predict(const at::Tensor& latent, const at::Tensor& library, heads::PredictMode mode,
                                std::optional<at::Generator> generator) {
  const auto genes = allGenes(latent.device());
  if (pca_) return family_->decode(latent, genes).squeeze(-1);  // [batch, G] log1p-normalised
  auto z = bottleneck_->decodeInput(latent);                     // [batch, L, d]
  auto out = family_->decode(z, genes);                          // [batch, G, width]
  heads::HeadContext context;
  context.gene_ids = genes;
  context.library = library;
  context.cell_features = z.mean(1);
  return head_->predict(out, context, mode, generator);
}

heads::ValueSpace Autoencoder::valueSpace() const {
  return head_ ? head_->valueSpace() : heads::ValueSpace::LogNormalized;
}

std::vector<float> Autoencoder::geneDispersion() const {
  const auto* nb = dynamic_cast<const heads::NegativeBinomialHead*>(head_.get());
  if (nb == nullptr || nb->options().dispersion != heads::Dispersion::Gene) return {};
  auto theta = nb->log_theta.detach().exp().to(torch::kFloat).cpu().contiguous();  // [genes]
  return {theta.data_ptr<float>(), theta.data_ptr<float>() + theta.numel()};
}

bool Autoencoder::needsIntegerCounts() const { return head_ && head_->needsIntegerCounts(); }

void Autoencoder::fitToData(const data::CsrMatrix& train_counts) {
  if (pca_) {
    auto dense = data::denseRows(train_counts);  // [cells, G]
    pca_->fit(transformInput(dense, dense.sum(1), InputTransform::Log1pCp10k));
    return;
  }
  head_->fitToData(train_counts);
}

int64_t Autoencoder::latentWidth() const {
  if (bottleneck_ && bottleneck_->discrete()) return bottleneck_->codebookSize();
  return bottleneck_ ? bottleneck_->latentDim() : family_->latentDim();
}

}  // namespace latentcell::models
