// The shared precompiled header. Every latentcell target reuses it (see CMakeLists.txt), so the
// heavy LibTorch umbrella header is parsed once per build instead of once per translation unit.
// Public headers must not rely on it: they include the narrow headers they need.
#pragma once

#include <torch/torch.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>
