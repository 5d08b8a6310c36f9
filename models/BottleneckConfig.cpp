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
}

void BottleneckConfig::validate() const {
  if (latent_dim < 0) reject("latent_dim", fmt::format("must be >= 0 (0 = the encoder's width), got {}", latent_dim));
  if (!(beta >= 0)) reject("beta", fmt::format("must be >= 0, got {}", beta));
  if (kind == "gaussian" && deterministic && beta != 0)
    reject("beta", fmt::format("must be 0 with deterministic: true (a mean-only encoder has no KL), got {}", beta));
  if (kind != "gaussian" && deterministic) reject("deterministic", fmt::format("applies to the gaussian bottleneck only, not {}", kind));
  if (kind != "gaussian" && latent_dim != 0)
    reject("latent_dim", fmt::format("applies to the gaussian bottleneck only, not {}", kind));
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
  if (config.kind == "fsq") return std::make_shared<FsqBottleneck>(FsqBottleneckOptions{in_dim, config.levels});
  if (config.kind == "none") return std::make_shared<IdentityBottleneck>(in_dim);
  throw std::invalid_argument(fmt::format("unknown bottleneck kind '{}' (choices: gaussian, fsq, none)", config.kind));
}

}  // namespace latentcell::models
