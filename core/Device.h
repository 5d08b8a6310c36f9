// Run-time device selection: "auto" is CUDA when available, else CPU.
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace latentcell::core {

// "auto", "cpu", "cuda" or "cuda:N". Asking for CUDA where none is available, or a device index
// out of range, is an error that says what is available.
c10::Device resolveDevice(const std::string& spec);

}  // namespace latentcell::core
