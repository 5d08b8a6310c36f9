// The prior interface (see Prior.h).
#include "priors/Prior.h"

#include <ATen/ATen.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

namespace latentcell::priors {

const char* toString(LatentKind kind) {
  return kind == LatentKind::Codes ? "FSQ code indices" : "continuous latents";
}

GuidanceMode parseGuidanceMode(const std::string& name) {
  if (name == "joint") return GuidanceMode::Joint;
  if (name == "additive") return GuidanceMode::Additive;
  throw std::invalid_argument("guidance mode must be 'joint' or 'additive', got '" + name + "'");
}

Prior::Prior(LatentSpec spec, const ConditionEncoderOptions& conditioning, const std::vector<ConditionColumnSpec>& columns)
    : spec_(spec) {
  conditions = register_module("conditions", ConditionEncoder(conditioning, columns));
}

c10::Device Prior::device() const {
  const auto params = parameters();
  return params.empty() ? c10::Device(c10::kCPU) : params.front().device();
}

void Prior::checkLatents(const at::Tensor& latents, const std::string& what) const {
  if (!latents.defined()) throw std::invalid_argument(fmt::format("{} prior: {} are missing", kindName(), what));
  const bool codes = spec_.kind == LatentKind::Codes;
  const bool got_codes = !latents.is_floating_point();
  if (codes != got_codes) {
    throw std::invalid_argument(fmt::format(
        "the {} prior models {} but {} are {} {} ({}); {}", kindName(), toString(spec_.kind), what,
        got_codes ? "integer" : "floating-point", latents.sizes(), c10::toString(latents.scalar_type()),
        codes ? "encode with an autoencoder whose bottleneck is fsq, or use prior kind flow or jit"
              : "encode with a gaussian (continuous) bottleneck, or use prior kind ar or mdlm for FSQ codes"));
  }
  const int64_t rank = codes ? 2 : 3;
  const std::string expected = codes ? fmt::format("[batch, {}] int64 codes in [0, {})", spec_.tokens, spec_.codebook)
                                     : fmt::format("[batch, {}, {}]", spec_.tokens > 0 ? std::to_string(spec_.tokens)
                                                                                        : std::string("cells"),
                                                   spec_.dim);
  const bool shape_ok = latents.dim() == rank && (spec_.tokens == 0 || latents.size(1) == spec_.tokens) &&
                        (codes ? latents.scalar_type() == at::kLong : latents.size(2) == spec_.dim);
  if (!shape_ok) {
    throw std::invalid_argument(fmt::format("{} prior: {} must be {}, got {} {} (a prior paired with another "
                                            "autoencoder?)",
                                            kindName(), what, expected, latents.sizes(),
                                            c10::toString(latents.scalar_type())));
  }
  if (codes && latents.numel() > 0) {
    const int64_t lo = latents.min().item<int64_t>(), hi = latents.max().item<int64_t>();
    if (lo < 0 || hi >= spec_.codebook) {
      throw std::invalid_argument(fmt::format("{} prior: {} hold codes in [{}, {}] outside the codebook [0, {})",
                                              kindName(), what, lo, hi, spec_.codebook));
    }
  }
}

at::Tensor Prior::requestConditions(const SampleRequest& request, int64_t n) const {
  if (n <= 0) throw std::invalid_argument(fmt::format("{} prior: the number of samples must be positive", kindName()));
  at::Tensor ids = request.conditions;
  if (!ids.defined()) {
    if (conditions->keys() > 0) {
      throw std::invalid_argument(fmt::format("{} prior: sampling needs condition ids for its columns ({})",
                                              kindName(), fmt::join(conditions->names(), ", ")));
    }
    ids = at::zeros({n, 0}, at::TensorOptions().dtype(at::kLong));
  }
  if (ids.dim() == 1) ids = ids.unsqueeze(0).expand({n, ids.size(0)});
  if (ids.dim() != 2 || ids.size(0) != n) {
    throw std::invalid_argument(fmt::format("{} prior: sample conditions must be [keys] or [{}, keys], got {}",
                                            kindName(), n, ids.sizes()));
  }
  ids = ids.to(device()).contiguous();
  conditions->checkIds(ids);
  return ids;
}

}  // namespace latentcell::priors
