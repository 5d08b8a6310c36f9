// Seeded random number generation on CPU and CUDA.
//
// A run seeds the global generators once (seedEverything) and code that must be reproducible
// independently of call order (samplers, simulators) owns a Generator made from its own seed.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace latentcell::core {

// SplitMix64 finaliser: turns structured seeds such as (seed, cell) into decorrelated 64-bit seeds
// for std::mt19937_64 streams that must not depend on call order.
inline uint64_t splitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform integer in [0, n) from a 64-bit engine's raw output, by rejection: the
// std::uniform_int_distribution algorithm is implementation-defined, and seeded draws (random
// token subsets, shard cell orders) must be the same with every standard library. n > 0.
template <typename Engine>
uint64_t uniformBelow(Engine& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do r = rng(); while (r >= limit);
  return r % n;
}

// Seeds torch's default CPU generator and, when CUDA is available, every CUDA generator.
void seedEverything(uint64_t seed);
// A fresh generator for the device type, seeded with `seed`.
at::Generator makeGenerator(uint64_t seed, const c10::Device& device = c10::Device(c10::kCPU));

}  // namespace latentcell::core
