// The dense MLP family (plain autoencoder, scVI-like encoder/decoder) as an EncoderDecoder.
//
//   encoder: x = transform(dense counts) [batch, G] -> (Linear -> norm -> act -> dropout)* -> Linear -> z [batch, d]
//   decoder: z -> (Linear -> norm -> act)* -> h [batch, H] -> per-gene affine map -> [batch, n, w]
//
// The decoder's last layer is what a Linear(H -> G * w) would be, stored as one [w, H] matrix and
// [w] bias per gene (row 0 = PAD), so that a request for a subset of genes reads only their rows and
// the interface's gene ids work as for the MCAB decoder (outputs permute with the ids). With w = 1
// it is scVI's final Linear(H -> G) whose output the head turns into a softmax over genes.
// The latent is one token: encode returns [batch, 1, d].
#pragma once

#include "models/EncoderDecoder.h"
#include "models/MlpConfig.h"

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace latentcell::models {

class MlpEncoderImpl : public torch::nn::Module {
 public:
  MlpEncoderImpl(int64_t num_genes, const MlpConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [batch, G] -> [batch, d]

  torch::nn::Sequential body{nullptr};
  torch::nn::Linear out{nullptr};
};
TORCH_MODULE(MlpEncoder);

class MlpDecoderImpl : public torch::nn::Module {
 public:
  // latent_dim: width of the decoder input (config.latent_dim for the autoencoder; the embedding
  // width in decoder-only mode).
  MlpDecoderImpl(int64_t num_genes, int64_t latent_dim, const MlpConfig& config);
  // z [batch, latent_dim], gene_ids [n] or [batch, n] (0..G) -> [batch, n, output_width]
  at::Tensor forward(const at::Tensor& z, const at::Tensor& gene_ids);

  torch::nn::Sequential body{nullptr};
  at::Tensor gene_weight;  // [G + 1, output_width, H]
  at::Tensor gene_bias;    // [G + 1, output_width]
};
TORCH_MODULE(MlpDecoder);

class MlpEncoderDecoder : public EncoderDecoder {
 public:
  MlpEncoderDecoder(int64_t num_genes, const MlpConfig& config);

  at::Tensor encode(const CellBatch& batch) override;
  at::Tensor decode(const at::Tensor& latent, const at::Tensor& gene_ids) override;

  int64_t numGenes() const override { return num_genes_; }
  int64_t latentTokens() const override { return 1; }
  int64_t latentDim() const override { return config_.latent_dim; }
  int64_t outputWidth() const override { return config_.output_width; }

  MlpEncoder encoder{nullptr};
  MlpDecoder decoder{nullptr};

 private:
  int64_t num_genes_;
  MlpConfig config_;
  InputTransform transform_;
};

}  // namespace latentcell::models
