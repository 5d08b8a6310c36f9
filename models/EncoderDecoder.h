// The stage-1 representation interface: every family (MCAB, MLP autoencoder, scVI-like MLP, PCA,
// a fixed embedding with a trained decoder) encodes a batch of cells into latent tokens and
// decodes latent tokens back to per-gene outputs for a head.
//
//   encode(batch)             -> latent  [batch, L, d]   (MLP, PCA and fixed embeddings: L = 1)
//   decode(latent, gene_ids)  -> outputs [batch, n, output_width]
//
// The bottleneck (Gaussian, FSQ, none) sits between the two and the head reads the decoder's
// per-gene outputs, so neither needs to know which family it is attached to; comparisons between
// families (the reconstruction benchmark paper) then differ only in this one module. Encoder and
// decoder are one object because the MCAB pair shares its gene-embedding table: owning it once
// keeps the parameter list free of duplicates (a module registered under two parents would be
// stepped twice by the optimizer).
//
// A batch carries the tokenised cell (data/Tokenizer.h: gene ids with PAD = 0, raw counts, padding
// mask) and, where the loader has them, the dense counts of every gene, the library sizes and a
// fixed per-cell embedding (obsm). Dense families scatter the tokens when no dense counts are given,
// so one batch layout serves every family.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>

namespace latentcell::models {

struct CellBatch {
  at::Tensor gene_ids;      // [batch, context] int64: gene + 1, 0 = PAD
  at::Tensor counts;        // [batch, context] float raw counts, 0 at PAD
  at::Tensor padding_mask;  // [batch, context] bool, true = PAD; gene_ids == 0 when absent
  at::Tensor dense_counts;  // [batch, genes] raw counts of every gene; optional
  at::Tensor library;       // [batch] total counts of the cell over all genes; optional
  at::Tensor embedding;     // [batch, dim] fixed per-cell embedding (obsm); decoder-only mode
};

class EncoderDecoder : public torch::nn::Module {
 public:
  // [batch, latentTokens(), latentDim()]
  virtual at::Tensor encode(const CellBatch& batch) = 0;
  // latent [batch, L, d]; gene_ids int64 in 0..numGenes() (0 = PAD, whose output is meaningless),
  // either [n] (the same genes for every cell) or [batch, n]. Returns [batch, n, outputWidth()],
  // equivariant in the gene ids: permuting them permutes the outputs.
  virtual at::Tensor decode(const at::Tensor& latent, const at::Tensor& gene_ids) = 0;

  virtual int64_t numGenes() const = 0;
  virtual int64_t latentTokens() const = 0;
  virtual int64_t latentDim() const = 0;
  virtual int64_t outputWidth() const = 0;
};

// How a dense family turns raw counts into its input: log1p(x) (scVI), log1p(x / l * 1e4) with l
// the library size (the reconstruction benchmark paper, PCA), or the counts unchanged.
enum class InputTransform { Log1p, Log1pCp10k, None };
InputTransform parseInputTransform(const std::string& name);

// The raw counts of every gene, [batch, num_genes]: batch.dense_counts when present (its width is
// checked), otherwise the tokens scattered onto their genes (PAD dropped).
at::Tensor denseCounts(const CellBatch& batch, int64_t num_genes);

// `dense` [batch, genes] raw counts -> the family's input. The library size is batch.library when
// present (the whole cell, also when the tokens were truncated), else the sum of `dense`.
at::Tensor transformInput(const at::Tensor& dense, const at::Tensor& library, InputTransform transform);

// The input of a dense family (MLP, PCA): the batch's counts of every gene (dense_counts, or its
// tokens scattered after checkTokens) after `transform`. `where` names the model in errors.
at::Tensor denseInput(const CellBatch& batch, int64_t num_genes, InputTransform transform,
                      const std::string& where);

// Checks the token fields of `batch` (presence, shapes, dtypes, ids in 0..num_genes) and throws
// std::invalid_argument naming `where` and the offending field.
void checkTokens(const CellBatch& batch, int64_t num_genes, const std::string& where);

// Checks latent [batch, L, d] and gene ids ([n] or [batch, n], 0..num_genes) for a decode call.
void checkDecodeInputs(const at::Tensor& latent, const at::Tensor& gene_ids, int64_t tokens,
                       int64_t dim, int64_t num_genes, const std::string& where);

}  // namespace latentcell::models
