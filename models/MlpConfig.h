// Hyper-parameters of the dense MLP encoder/decoder family, the reconstruction benchmark paper's
// end-to-end baselines (App. A.2: AE and the scVI VAE; sweep: 1-4 layers of 1024-4096 units).
//
// One section describes both halves: the decoder mirrors the encoder (hidden widths reversed).
// The plain autoencoder of the benchmark reads log-normalised expression (log1p_cp10k); scVI's
// encoder reads log1p(counts) through Linear -> BatchNorm(eps 1e-3, momentum 0.01) -> ReLU ->
// Dropout(0.1) layers of 128 units, which norm = batch, activation = relu, dropout = 0.1,
// input_transform = log1p, hidden = [128] reproduce. Whether it is a VAE is the bottleneck's
// business (Gaussian vs none), not this section's.
#pragma once

#include "core/Config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::models {

struct MlpConfig : core::ConfigSection {
  std::vector<int64_t> hidden = {256};  // encoder hidden widths; the decoder uses them reversed
  int64_t latent_dim = 32;              // d (one latent token)
  int64_t output_width = 1;             // per-gene decoder output width read by the head
  std::string norm = "layer";           // layer | batch | none
  std::string activation = "relu";      // relu | gelu | silu
  double dropout = 0.0;                 // after each encoder hidden layer (scVI: 0.1; decoder: none)
  std::string input_transform = "log1p_cp10k";

  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

}  // namespace latentcell::models
