// Gene and count embeddings (see GeneEmbedding.h).
#include "models/GeneEmbedding.h"

#include "core/Init.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/options/linear.h>

#include <stdexcept>

namespace latentcell::models {

GeneEmbeddingImpl::GeneEmbeddingImpl(int64_t num_genes, int64_t dim) : num_genes_(num_genes), dim_(dim) {
  if (num_genes <= 0 || dim <= 0) {
    throw std::invalid_argument("GeneEmbedding: num_genes (" + std::to_string(num_genes) + ") and dim (" +
                                std::to_string(dim) + ") must be positive");
  }
  // N(0, 1) as torch.nn.Embedding (the scLDM code's table); the MCAB norms set the working scale.
  auto w = torch::nn::init::normal_(at::empty({num_genes + 1, dim}), 0.0, 1.0);
  w[0].zero_();
  weight = register_parameter("weight", w);
}

at::Tensor GeneEmbeddingImpl::forward(const at::Tensor& gene_ids) {
  // padding_idx = 0: the PAD row receives no gradient and so stays zero.
  return at::embedding(weight, gene_ids, /*padding_idx=*/0);
}

CountEmbeddingKind parseCountEmbeddingKind(const std::string& name) {
  if (name == "concat") return CountEmbeddingKind::Concat;
  if (name == "log1p") return CountEmbeddingKind::Log1p;
  if (name == "mlp") return CountEmbeddingKind::Mlp;
  throw std::invalid_argument("unknown count embedding '" + name + "' (use concat, log1p or mlp)");
}

CountEmbeddingImpl::CountEmbeddingImpl(CountEmbeddingKind kind, int64_t dim, int64_t mlp_hidden)
    : kind_(kind) {
  if (kind_ == CountEmbeddingKind::Concat) {
    proj = register_module("proj", torch::nn::Linear(torch::nn::LinearOptions(2 * dim, dim)));
    core::xavierUniform(proj);
  } else if (kind_ == CountEmbeddingKind::Mlp) {
    mlp = register_module("mlp", core::Mlp(1, mlp_hidden > 0 ? mlp_hidden : dim, core::Activation::Gelu,
                                           /*bias=*/true, /*out_dim=*/dim));
  }
}

at::Tensor CountEmbeddingImpl::forward(const at::Tensor& gene_vectors, const at::Tensor& counts) {
  auto x = at::log1p(counts.to(gene_vectors.scalar_type())).unsqueeze(-1);  // [b, n, 1]
  switch (kind_) {
    case CountEmbeddingKind::Concat:
      return proj(at::cat({gene_vectors, x.expand_as(gene_vectors)}, -1));  // [b, n, 2E] -> [b, n, E]
    case CountEmbeddingKind::Log1p:
      return gene_vectors * x;                                              // [b, n, E]
    case CountEmbeddingKind::Mlp:
      return gene_vectors * mlp(x);                                         // [b, n, E]
  }
  throw std::logic_error("CountEmbedding: unhandled kind");
}

}  // namespace latentcell::models
