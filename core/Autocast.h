// RAII mixed-precision scope, the C++ counterpart of Python's torch.autocast (notes sec. 8).
//
// LibTorch has the autocast dispatch keys but no guard object: this one enables autocast for a
// device type with a dtype (bf16 by default), tracks nesting like Python does, clears the cast
// cache when the outermost scope ends, and restores the previous state.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace latentcell::core {

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
