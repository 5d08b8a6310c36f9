// Weight initialisation conventions shared by every block.
//
// Linears are xavier-uniform with zero bias (DiT, scLDM). adaLN-Zero modulation layers and the
// DiT final projection are zero-initialised so that every block starts as the identity map.
// Modules call these in their constructors, so composing modules never re-initialises a child.
#pragma once

#include <torch/nn/modules/linear.h>

namespace latentcell::core {

void xavierUniform(torch::nn::Linear& linear);
void zeroInit(torch::nn::Linear& linear);
void normalInit(torch::nn::Linear& linear, double std);

}  // namespace latentcell::core
