// Differentiable RBF MMD (see Mmd.h).
#include "heads/Mmd.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <stdexcept>

namespace latentcell::heads {
namespace {

// Mean of the summed RBF kernel over all pairs of rows of a [n, d] and b [m, d].
at::Tensor meanKernel(const at::Tensor& a, const at::Tensor& b, const std::vector<double>& sigmas) {
  auto sq_a = a.square().sum(1, /*keepdim=*/true);                        // [n, 1]
  auto sq_b = b.square().sum(1, /*keepdim=*/true).t();                    // [1, m]
  auto dist = (sq_a + sq_b - 2.0 * a.matmul(b.t())).clamp_min(0.0);       // [n, m]
  at::Tensor total;
  for (double s : sigmas) {
    auto k = at::exp(dist * (-0.5 / (s * s)));                            // [n, m]
    total = total.defined() ? total + k : k;
  }
  return total.mean();
}

}  // namespace

at::Tensor mmdRbf(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& sigmas) {
  if (x.dim() != 2 || y.dim() != 2 || x.size(1) != y.size(1))
    throw std::invalid_argument(fmt::format("mmdRbf: expected two [cells, features] tensors of equal width, got {} and {}",
                                            fmt::join(x.sizes(), "x"), fmt::join(y.sizes(), "x")));
  if (x.size(0) == 0 || y.size(0) == 0) throw std::invalid_argument("mmdRbf: both sets need at least one cell");
  if (sigmas.empty()) throw std::invalid_argument("mmdRbf: no kernel bandwidths given");
  for (double s : sigmas)
    if (!(s > 0)) throw std::invalid_argument(fmt::format("mmdRbf: bandwidths must be positive, got {}", s));
  return meanKernel(x, x, sigmas) + meanKernel(y, y, sigmas) - 2.0 * meanKernel(x, y, sigmas);
}

}  // namespace latentcell::heads
