// Device selection (see Device.h).
#include "core/Device.h"

#include <torch/cuda.h>

#include <stdexcept>

namespace latentcell::core {

c10::Device resolveDevice(const std::string& spec) {
  const bool cuda = torch::cuda::is_available();
  if (spec == "auto") return cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec.rfind("cuda", 0) == 0) {
    if (!cuda) {
      throw std::invalid_argument("device '" + spec +
                                  "' requested but no CUDA device is available; use device=cpu or auto");
    }
    c10::Device device(c10::kCPU);
    try {
      device = c10::Device(spec);
    } catch (const std::exception&) {
      throw std::invalid_argument("bad device '" + spec + "' (use auto, cpu, cuda or cuda:N)");
    }
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    if (device.has_index() && device.index() >= count) {
      throw std::invalid_argument("device '" + spec + "' out of range: " + std::to_string(count) +
                                  " CUDA device(s) visible");
    }
    return device.has_index() ? device : c10::Device(c10::kCUDA, 0);
  }
  throw std::invalid_argument("bad device '" + spec + "' (use auto, cpu, cuda or cuda:N)");
}

}  // namespace latentcell::core
