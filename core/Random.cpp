// Seeded RNG helpers (see Random.h).
#include "core/Random.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <mutex>

namespace latentcell::core {

void seedEverything(uint64_t seed) {
  torch::manual_seed(seed);  // seeds CPU and, when present, all CUDA generators
}

at::Generator makeGenerator(uint64_t seed, const c10::Device& device) {
  if (device.is_cuda()) {
    auto gen = at::globalContext().defaultGenerator(device).clone();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
    return gen;
  }
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

}  // namespace latentcell::core
