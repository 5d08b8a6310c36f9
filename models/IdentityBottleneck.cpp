// Identity bottleneck (see IdentityBottleneck.h).
#include "models/IdentityBottleneck.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::models {

IdentityBottleneck::IdentityBottleneck(int64_t in_dim) : in_dim_(in_dim) {
  if (in_dim_ <= 0) throw std::invalid_argument(fmt::format("none bottleneck: input width must be positive, got {}", in_dim_));
}

BottleneckOutput IdentityBottleneck::forward(const at::Tensor& h) {
  checkInput(h, in_dim_);
  BottleneckOutput out;
  out.z = h;
  out.latent = h;
  out.loss = at::zeros({}, h.options());
  return out;
}

at::Tensor IdentityBottleneck::decodeInput(const at::Tensor& latent) {
  checkInput(latent, in_dim_);
  return latent;
}

}  // namespace latentcell::models
