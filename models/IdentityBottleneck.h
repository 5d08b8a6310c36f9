// No bottleneck (`kind: none`): the encoder's output goes to the decoder unchanged and is the
// latent, with no auxiliary loss. The plain-autoencoder baseline and the reference point that
// tells how much a Gaussian or FSQ bottleneck costs in reconstruction.
#pragma once

#include "models/Bottleneck.h"

namespace latentcell::models {

class IdentityBottleneck : public Bottleneck {
 public:
  explicit IdentityBottleneck(int64_t in_dim);

  BottleneckOutput forward(const at::Tensor& h) override;
  at::Tensor decodeInput(const at::Tensor& latent) override;
  int64_t outputDim() const override { return in_dim_; }
  int64_t latentDim() const override { return in_dim_; }
  const char* kind() const override { return "none"; }

 private:
  int64_t in_dim_;
};

}  // namespace latentcell::models
