// Dense MLP family configuration (see MlpConfig.h).
#include "models/MlpConfig.h"

#include <fmt/format.h>

namespace latentcell::models {

void MlpConfig::visit(core::ConfigVisitor& v) {
  v.field("hidden", hidden, "encoder hidden layer widths (the decoder uses them in reverse order)");
  v.field("latent_dim", latent_dim, "latent width d (a single latent token)");
  v.field("output_width", output_width, "width of each gene's decoder output, read by the head");
  v.choice("norm", norm, {"layer", "batch", "none"}, "normalisation after each hidden Linear (scVI: batch)");
  v.choice("activation", activation, {"relu", "gelu", "silu"}, "hidden activation");
  v.field("dropout", dropout, "dropout after each encoder hidden layer (scVI: 0.1)");
  v.choice("input_transform", input_transform, {"log1p", "log1p_cp10k", "none"},
           "encoder input: log1p(counts) (scVI), log1p(counts / library * 1e4), or raw counts");
}

void MlpConfig::validate() const {
  for (size_t i = 0; i < hidden.size(); ++i) {
    if (hidden[i] <= 0) reject("hidden", fmt::format("entry {} must be positive, got {}", i, hidden[i]));
  }
  if (latent_dim <= 0) reject("latent_dim", "must be positive");
  if (output_width <= 0) reject("output_width", "must be positive");
  if (!(dropout >= 0 && dropout < 1)) reject("dropout", "must be in [0, 1)");
}

}  // namespace latentcell::models
