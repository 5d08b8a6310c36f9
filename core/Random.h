// Seeded random number generation on CPU and CUDA.
//
// A run seeds the global generators once (seedEverything) and code that must be reproducible
// independently of call order (samplers, simulators) owns a Generator made from its own seed.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace latentcell::core {

// Seeds torch's default CPU generator and, when CUDA is available, every CUDA generator.
void seedEverything(uint64_t seed);
// A fresh generator for the device type, seeded with `seed`.
at::Generator makeGenerator(uint64_t seed, const c10::Device& device = c10::Device(c10::kCPU));

}  // namespace latentcell::core
