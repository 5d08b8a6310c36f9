// Dense MLP encoder/decoder family (see MlpEncoderDecoder.h).
#include "models/MlpEncoderDecoder.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>

namespace latentcell::models {

namespace {

// Appends Linear(in -> out) -> norm -> activation (-> dropout) to `body`.
void addHiddenLayer(torch::nn::Sequential& body, int64_t in, int64_t out, const MlpConfig& config,
                    double dropout) {
  torch::nn::Linear linear(in, out);
  core::xavierUniform(linear);
  body->push_back(linear);
  if (config.norm == "layer") {
    body->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({out})));
  } else if (config.norm == "batch") {
    // scVI's FCLayers settings.
    body->push_back(torch::nn::BatchNorm1d(torch::nn::BatchNormOptions(out).eps(1e-3).momentum(0.01)));
  }
  if (config.activation == "relu") {
    body->push_back(torch::nn::ReLU());
  } else if (config.activation == "gelu") {
    body->push_back(torch::nn::GELU());
  } else {
    body->push_back(torch::nn::SiLU());
  }
  if (dropout > 0) body->push_back(torch::nn::Dropout(dropout));
}

}  // namespace

MlpEncoderImpl::MlpEncoderImpl(int64_t num_genes, const MlpConfig& config) {
  core::validateConfig(config);
  body = register_module("body", torch::nn::Sequential());
  int64_t width = num_genes;
  for (int64_t h : config.hidden) {
    addHiddenLayer(body, width, h, config, config.dropout);
    width = h;
  }
  out = register_module("out", torch::nn::Linear(width, config.latent_dim));
  core::xavierUniform(out);
}

at::Tensor MlpEncoderImpl::forward(const at::Tensor& x) {
  return out(body->is_empty() ? x : body->forward(x));  // [b, d]
}

MlpDecoderImpl::MlpDecoderImpl(int64_t num_genes, int64_t latent_dim, const MlpConfig& config) {
  core::validateConfig(config);
  body = register_module("body", torch::nn::Sequential());
  int64_t width = latent_dim;
  for (auto it = config.hidden.rbegin(); it != config.hidden.rend(); ++it) {
    addHiddenLayer(body, width, *it, config, /*dropout=*/0.0);
    width = *it;
  }
  // Xavier-uniform per gene (each gene's map is a Linear(H -> w)); PAD row and biases zero.
  const double bound = std::sqrt(6.0 / static_cast<double>(width + config.output_width));
  auto w = torch::nn::init::uniform_(at::empty({num_genes + 1, config.output_width, width}), -bound, bound);
  w[0].zero_();
  gene_weight = register_parameter("gene_weight", w);
  gene_bias = register_parameter("gene_bias", at::zeros({num_genes + 1, config.output_width}));
}

at::Tensor MlpDecoderImpl::forward(const at::Tensor& z, const at::Tensor& gene_ids) {
  auto h = body->is_empty() ? z : body->forward(z);                                 // [b, H]
  const int64_t batch = h.size(0), hidden = h.size(1), width = gene_weight.size(1);
  if (gene_ids.dim() == 1) {
    const int64_t n = gene_ids.size(0);
    auto w = gene_weight.index_select(0, gene_ids).reshape({n * width, hidden});   // [n w, H]
    auto out = at::matmul(h, w.t()).view({batch, n, width});                       // [b, n, w]
    return out + gene_bias.index_select(0, gene_ids);                              // [b, n, w]
  }
  // Per-cell genes: every gene's output, then each cell's picks (cheaper than a weight copy per cell).
  const int64_t rows = gene_weight.size(0);
  auto all = at::matmul(h, gene_weight.reshape({rows * width, hidden}).t()).view({batch, rows, width});
  all = all + gene_bias;                                                            // [b, G + 1, w]
  auto index = gene_ids.unsqueeze(-1).expand({batch, gene_ids.size(1), width});    // [b, n, w]
  return all.gather(1, index);                                                      // [b, n, w]
}

MlpEncoderDecoder::MlpEncoderDecoder(int64_t num_genes, const MlpConfig& config)
    : num_genes_(num_genes), config_(config) {
  core::validateConfig(config_);
  if (num_genes <= 0) throw std::invalid_argument("MlpEncoderDecoder: num_genes must be positive");
  transform_ = parseInputTransform(config_.input_transform);
  encoder = register_module("encoder", MlpEncoder(num_genes, config_));
  decoder = register_module("decoder", MlpDecoder(num_genes, config_.latent_dim, config_));
}

at::Tensor MlpEncoderDecoder::encode(const CellBatch& batch) {
  auto x = denseInput(batch, num_genes_, transform_, "MLP encoder");  // [b, G]
  return encoder(x.to(encoder->out->weight.scalar_type())).unsqueeze(1);  // [b, 1, d]
}

at::Tensor MlpEncoderDecoder::decode(const at::Tensor& latent, const at::Tensor& gene_ids) {
  checkDecodeInputs(latent, gene_ids, 1, latentDim(), num_genes_, "MLP decoder");
  return decoder(latent.squeeze(1), gene_ids);  // [b, n, w]
}

}  // namespace latentcell::models
