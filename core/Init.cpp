// Weight initialisation conventions (see Init.h).
#include "core/Init.h"

#include <torch/nn/init.h>
#include <torch/types.h>

namespace latentcell::core {

void xavierUniform(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  torch::nn::init::xavier_uniform_(linear->weight);
  if (linear->bias.defined()) linear->bias.zero_();
}

void zeroInit(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  linear->weight.zero_();
  if (linear->bias.defined()) linear->bias.zero_();
}

void normalInit(torch::nn::Linear& linear, double std) {
  torch::NoGradGuard no_grad;
  torch::nn::init::normal_(linear->weight, 0.0, std);
  if (linear->bias.defined()) linear->bias.zero_();
}

}  // namespace latentcell::core
