// Bottleneck interface (see Bottleneck.h).
#include "models/Bottleneck.h"

#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::models {

Bottleneck::~Bottleneck() = default;

void Bottleneck::checkInput(const at::Tensor& h, int64_t in_dim) const {
  if (h.dim() != 3 || h.size(2) != in_dim)
    throw std::invalid_argument(fmt::format("{} bottleneck: input must be [batch, tokens, {}], got [{}]", kind(), in_dim,
                                            fmt::join(h.sizes(), ", ")));
}

}  // namespace latentcell::models
