// Module state <-> named tensors, the C++ counterpart of torch.nn.Module.state_dict() and
// load_state_dict().
//
// LibTorch's C++ Module has no state dict; its torch::save archives are not readable from
// Python. Flattening a module to dotted names in PyTorch's order ("0.weight", "blocks.3.norm.bias")
// lets checkpoints go through safetensors (core/Safetensors.h) and line up with the names the
// Python reference models use.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace latentcell::core {

// Parameters and buffers of `module` and all its descendants, with dotted names, in PyTorch's
// state_dict order (a module's own parameters, then its buffers, then each child in turn).
// Tensors are detached but share storage with the module.
std::vector<std::pair<std::string, at::Tensor>> stateDict(const torch::nn::Module& module);

// Copies `state` into `module`'s parameters and buffers under NoGradGuard, converting each
// tensor to the target's dtype and device. Nothing is copied unless every check passes. With
// `strict`, missing and unexpected names are errors; shape mismatches and duplicate names are
// always errors. The std::runtime_error lists every problem and names `source` (e.g. the
// checkpoint path) when given.
void loadStateDict(torch::nn::Module& module,
                   const std::vector<std::pair<std::string, at::Tensor>>& state,
                   bool strict = true, const std::string& source = "");

}  // namespace latentcell::core
