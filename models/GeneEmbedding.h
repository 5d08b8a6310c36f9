// Gene tokens as vectors (notes sec. 1): one gene-identity table shared by the MCAB encoder (its
// input tokens) and decoder (its queries), and the three ways the reference systems combine a
// gene's identity vector v_g with its count x:
//
//   concat (scLDM paper, eq. 6):       e = W [v_g ; repeat_E(log1p x)] + b      W: 2E -> E
//   log1p  (public scLDM code default): e = v_g * log1p(x)                      (PAD gives 0)
//   mlp    (ExpressionVAE sec. 3.1):    e = v_g * f(log1p x),  f = Linear(1, H) -> GELU -> Linear(H, E)
//
// ExpressionVAE describes its form only as "an MLP on the log1p count, modulated by the gene
// identity token"; the modulation is taken multiplicative (elementwise, as in the code default),
// so the MLP learns a per-channel response curve of the count that the gene vector scales.
// All three read raw counts; log1p keeps them on the scale the paper forms were written for.
//
// The table has num_genes + 1 rows: row 0 is PAD (data/Tokenizer.h), kept at zero and receiving
// no gradient, so PAD queries and PAD tokens contribute nothing through the table itself.
#pragma once

#include "core/FeedForward.h"

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

namespace latentcell::models {

class GeneEmbeddingImpl : public torch::nn::Module {
 public:
  GeneEmbeddingImpl(int64_t num_genes, int64_t dim);
  // gene_ids int64 [...] in 0..num_genes -> [..., dim]
  at::Tensor forward(const at::Tensor& gene_ids);

  int64_t numGenes() const { return num_genes_; }
  int64_t dim() const { return dim_; }

  at::Tensor weight;  // [num_genes + 1, dim], row 0 = PAD

 private:
  int64_t num_genes_, dim_;
};
TORCH_MODULE(GeneEmbedding);

enum class CountEmbeddingKind { Concat, Log1p, Mlp };
// "concat", "log1p" or "mlp"; anything else throws std::invalid_argument listing the choices.
CountEmbeddingKind parseCountEmbeddingKind(const std::string& name);

class CountEmbeddingImpl : public torch::nn::Module {
 public:
  // mlp_hidden: hidden width of the mlp form (0 = dim); unused by the other forms.
  CountEmbeddingImpl(CountEmbeddingKind kind, int64_t dim, int64_t mlp_hidden = 0);
  // gene_vectors [batch, n, dim] (the table's rows for the tokens), counts [batch, n] -> [batch, n, dim]
  at::Tensor forward(const at::Tensor& gene_vectors, const at::Tensor& counts);

  CountEmbeddingKind kind() const { return kind_; }

  torch::nn::Linear proj{nullptr};  // concat form
  core::Mlp mlp{nullptr};           // mlp form

 private:
  CountEmbeddingKind kind_;
};
TORCH_MODULE(CountEmbedding);

}  // namespace latentcell::models
