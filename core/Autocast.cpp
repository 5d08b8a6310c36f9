// RAII autocast scope (see Autocast.h).
#include "core/Autocast.h"

#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

namespace latentcell::core {

bool cpuHasBf16() {
  static const bool has = [] {
    const auto caps = at::cpu::get_cpu_capabilities();
    const auto flag = [&](const char* name) {
      const auto it = caps.find(name);
      return it != caps.end() && it->second.isBool() && it->second.toBool();
    };
    return flag("avx512_bf16") || flag("amx_bf16") || flag("bf16");  // x86, x86, arm64
  }();
  return has;
}

AutocastGuard::AutocastGuard(c10::DeviceType device, bool enabled, c10::ScalarType dtype)
    : device_(device),
      prev_enabled_(at::autocast::is_autocast_enabled(device)),
      prev_dtype_(at::autocast::get_autocast_dtype(device)) {
  at::autocast::set_autocast_enabled(device_, enabled);
  at::autocast::set_autocast_dtype(device_, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
}

}  // namespace latentcell::core
