// PCA as a stage-1 baseline (reconstruction benchmark paper, App. A.2, eq. 4-5):
//   z = W^T (x - mean),  x_hat = mean + W z,  x = log1p(counts / library * 1e4)
// with W the top-k right singular vectors of the centred training matrix, which makes x_hat the
// best rank-k reconstruction in least squares (Eckart-Young). Every learned model should beat it
// at the same latent size (L x d = k).
//
// The SVD is randomized (Halko, Martinsson and Tropp 2011): a Gaussian sketch with `oversampling`
// extra columns, `power_iterations` rounds of subspace iteration re-orthonormalised by QR at every
// half step (their Alg. 4.4, which keeps the small singular directions from being lost to
// rounding), then the exact SVD of the small projected matrix (Alg. 5.1). Cost O(cells * genes * k)
// instead of a full SVD, with LibTorch ops only, so it runs on the GPU as well. Component signs are
// fixed (largest-magnitude loading positive) so a refit gives the same basis.
//
// Mean and components are buffers: they go into the state dict and checkpoints like any weights.
#pragma once

#include "core/Config.h"
#include "models/EncoderDecoder.h"

#include <ATen/core/Generator.h>

namespace latentcell::models {

struct PcaConfig : core::ConfigSection {
  int64_t components = 32;      // k
  int64_t oversampling = 10;    // extra sketch columns p
  int64_t power_iterations = 7; // subspace iterations q (scikit-learn's choice for small k)
  int64_t seed = 0;             // Gaussian sketch

  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct Svd {
  at::Tensor u;   // [m, k]
  at::Tensor s;   // [k], descending
  at::Tensor vh;  // [k, n]
};

// Rank-`rank` randomized SVD of a [m, n]; the sketch draws from `generator` (on a's device).
Svd randomizedSvd(const at::Tensor& a, int64_t rank, int64_t oversampling, int64_t power_iterations,
                  at::Generator generator);

class PcaBaseline : public EncoderDecoder {
 public:
  PcaBaseline(int64_t num_genes, const PcaConfig& config);

  // x [cells, genes]: log1p-normalised training cells (transformInput(..., Log1pCp10k)).
  void fit(const at::Tensor& x);
  bool fitted() const;

  at::Tensor project(const at::Tensor& x);      // [cells, genes] -> [cells, k]
  at::Tensor reconstruct(const at::Tensor& z);  // [cells, k] -> [cells, genes]

  // EncoderDecoder: encode reads the batch's counts, log1p-normalises them and projects:
  // [batch, 1, k]; decode returns each requested gene's reconstructed log1p-normalised value,
  // [batch, n, 1] (0 for PAD).
  at::Tensor encode(const CellBatch& batch) override;
  at::Tensor decode(const at::Tensor& latent, const at::Tensor& gene_ids) override;

  int64_t numGenes() const override { return num_genes_; }
  int64_t latentTokens() const override { return 1; }
  int64_t latentDim() const override { return config_.components; }
  int64_t outputWidth() const override { return 1; }

  at::Tensor mean;                // [genes]
  at::Tensor components;          // [k, genes], orthonormal rows
  at::Tensor singular_values;     // [k] of the centred training matrix
  at::Tensor explained_variance;  // [k] = s^2 / (cells - 1)
  at::Tensor fitted_cells;        // [] int64: cells the fit used, 0 before fit()

 private:
  void requireFitted(const char* what) const;

  int64_t num_genes_;
  PcaConfig config_;
};

}  // namespace latentcell::models
