// The "encoder" of decoder-only mode: a fixed per-cell embedding (an obsm matrix such as a
// foundation model's cell embedding, the reconstruction benchmark paper's decoder-only setting)
// read as the latent, with nothing to train. An embedding of width D becomes L tokens of width
// D / L (L = 1 for the MLP decoder; more to feed the token-based MCAB decoder), by a view: the
// values are passed through unchanged.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace latentcell::models {

class FixedEmbeddingEncoderImpl : public torch::nn::Module {
 public:
  FixedEmbeddingEncoderImpl(int64_t embedding_dim, int64_t tokens);
  // embedding [batch, D] -> [batch, L, D / L]
  at::Tensor forward(const at::Tensor& embedding);

  int64_t tokens() const { return tokens_; }
  int64_t tokenDim() const { return embedding_dim_ / tokens_; }

 private:
  int64_t embedding_dim_, tokens_;
};
TORCH_MODULE(FixedEmbeddingEncoder);

}  // namespace latentcell::models
