// RAII mixed-precision scope, the C++ counterpart of Python's torch.autocast (notes sec. 8).
//
// LibTorch has the autocast dispatch keys but no guard object: this one enables autocast for a
// device type with a dtype (bf16 by default), tracks nesting like Python does, clears the cast
// cache when the outermost scope ends, and restores the previous state.
//
// On CPU, bf16 autocast only pays off on processors with bf16 arithmetic (AVX512-BF16, AMX-BF16, Arm BF16);
// elsewhere every bf16 matmul is emulated and slower than fp32, so callers ask cpuHasBf16() first.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace latentcell::core {

// Whether this CPU has bf16 arithmetic (x86 avx512_bf16 or amx_bf16, Arm bf16), as cpuinfo detects it.
bool cpuHasBf16();

class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, bool enabled, c10::ScalarType dtype = c10::kBFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool prev_enabled_;
  c10::ScalarType prev_dtype_;
};

}  // namespace latentcell::core
