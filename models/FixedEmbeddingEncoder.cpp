// Fixed-embedding encoder (see FixedEmbeddingEncoder.h).
#include "models/FixedEmbeddingEncoder.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::models {

FixedEmbeddingEncoderImpl::FixedEmbeddingEncoderImpl(int64_t embedding_dim, int64_t tokens)
    : embedding_dim_(embedding_dim), tokens_(tokens) {
  if (embedding_dim <= 0 || tokens <= 0 || embedding_dim % tokens != 0) {
    throw std::invalid_argument(fmt::format(
        "fixed embedding: width {} cannot be split into {} latent tokens (latent_tokens must divide "
        "the embedding width)", embedding_dim, tokens));
  }
}

at::Tensor FixedEmbeddingEncoderImpl::forward(const at::Tensor& embedding) {
  if (!embedding.defined()) {
    throw std::invalid_argument("fixed embedding: the batch carries no per-cell embedding (decoder-only mode "
                                "reads it from the data's obsm)");
  }
  if (embedding.dim() != 2 || embedding.size(1) != embedding_dim_) {
    throw std::invalid_argument(fmt::format("fixed embedding: expected [batch, {}], got {}", embedding_dim_,
                                            fmt::format("{}", embedding.sizes())));
  }
  return embedding.reshape({embedding.size(0), tokens_, embedding_dim_ / tokens_});  // [b, L, D / L]
}

}  // namespace latentcell::models
