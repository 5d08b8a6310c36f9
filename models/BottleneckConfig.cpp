// Bottleneck config and factory (see BottleneckConfig.h).
#include "models/BottleneckConfig.h"

#include "models/FsqBottleneck.h"
#include "models/GaussianBottleneck.h"
#include "models/IdentityBottleneck.h"

#include <fmt/format.h>

#include <limits>
#include <stdexcept>

namespace latentcell::models {

void BottleneckConfig::visit(core::ConfigVisitor& v) {
  v.choice("kind", kind, {"gaussian", "fsq", "none"}, "latent bottleneck");
  v.field("latent_dim", latent_dim, "gaussian: latent width per token; 0 = the encoder's output width");
  v.field("beta", beta, "gaussian: KL weight (ExpressionVAE 2e-6, scLDM sweeps 0 and 1e-5)");
  v.field("deterministic", deterministic, "gaussian: mean-only encoder without KL or sampling (needs beta: 0)");
  v.field("levels", levels, "fsq: quantisation levels per dimension; codes = their product (e.g. [8, 8, 8] = 512)");
  v.field("dither", dither,
          "fsq, training only: probability per value of uniform noise of one rounding cell instead of rounding "
          "(0 = the paper's FSQ)");
  v.field("bound_penalty", bound_penalty,
          "fsq: weight of sum(z^2) before the tanh bound, which keeps dimensions out of saturation (0 = off)");
}

void BottleneckConfig::validate() const {
  if (latent_dim < 0) reject("latent_dim", fmt::format("must be >= 0 (0 = the encoder's width), got {}", latent_dim));
  if (!(beta >= 0)) reject("beta", fmt::format("must be >= 0, got {}", beta));
  if (kind == "gaussian" && deterministic && beta != 0)
    reject("beta", fmt::format("must be 0 with deterministic: true (a mean-only encoder has no KL), got {}", beta));
  if (kind != "gaussian" && deterministic) reject("deterministic", fmt::format("applies to the gaussian bottleneck only, not {}", kind));
  if (kind != "gaussian" && latent_dim != 0)
    reject("latent_dim", fmt::format("applies to the gaussian bottleneck only, not {}", kind));
  if (kind != "fsq" && dither != 0) reject("dither", fmt::format("applies to the fsq bottleneck only, not {}", kind));
  if (kind != "fsq" && bound_penalty != 0)
    reject("bound_penalty", fmt::format("applies to the fsq bottleneck only, not {}", kind));
  if (!(dither >= 0 && dither <= 1)) reject("dither", fmt::format("must be a probability in [0, 1], got {}", dither));
  if (!(bound_penalty >= 0)) reject("bound_penalty", fmt::format("must be >= 0, got {}", bound_penalty));
  if (kind == "fsq") {
    if (levels.empty()) reject("levels", "needs at least one dimension");
    int64_t codes = 1;
    for (int64_t l : levels) {
      if (l < 2) reject("levels", fmt::format("every level must be >= 2, got [{}]", fmt::join(levels, ", ")));
      if (codes > std::numeric_limits<int32_t>::max() / l)
        reject("levels", fmt::format("[{}] gives more than 2^31 codes", fmt::join(levels, ", ")));
      codes *= l;
    }
  }
}

std::shared_ptr<Bottleneck> makeBottleneck(const BottleneckConfig& config, int64_t in_dim) {
  if (config.kind == "gaussian")
    return std::make_shared<GaussianBottleneck>(
        GaussianBottleneckOptions{in_dim, config.latent_dim, config.beta, config.deterministic});
  if (config.kind == "fsq")
    return std::make_shared<FsqBottleneck>(FsqBottleneckOptions{in_dim, config.levels, config.dither, config.bound_penalty});
  if (config.kind == "none") return std::make_shared<IdentityBottleneck>(in_dim);
  throw std::invalid_argument(fmt::format("unknown bottleneck kind '{}' (choices: gaussian, fsq, none)", config.kind));
}

}  // namespace latentcell::models
