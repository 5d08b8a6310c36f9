// Building a prior from its config and what the autoencoder and the data provide.
//
// The factory is where a prior meets its latents, so this is where a mismatch between the prior
// family and the autoencoder's bottleneck (an FSQ prior on Gaussian latents, a flow prior on
// code indices) is rejected, as a ConfigError that names both and the kinds that would fit.
#pragma once

#include "priors/ConditionEncoder.h"
#include "priors/Prior.h"
#include "priors/PriorConfig.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace latentcell::data {
struct Vocabulary;
}

namespace latentcell::priors {

struct PriorContext {
  LatentKind latents = LatentKind::Continuous;  // what the autoencoder's bottleneck produces
  std::string bottleneck;                       // its name, for messages ("gaussian", "fsq")
  int64_t tokens = 0;                           // L latent tokens per cell
  int64_t latent_dim = 0;                       // d per token (continuous latents)
  int64_t codebook = 0;                         // K codes (FSQ)
  std::vector<ConditionColumnSpec> columns;     // the condition columns, in id order
};

// The latent kind a prior family models ("ar", "mdlm": codes; "flow", "jit": continuous).
LatentKind latentKindOf(const std::string& prior_kind);

// Throws core::ConfigError when prior `prior_kind` cannot model latents of kind `available`.
void checkLatentCompatibility(const std::string& prior_kind, LatentKind available, const std::string& bottleneck);

// The prior of config.kind. Sequence priors see L tokens of width d (or L codes); the transport
// prior sees cells as tokens of width L * d.
std::shared_ptr<Prior> makePrior(const PriorConfig& config, const PriorContext& context);

// One column spec per vocabulary; columns named in conditioning.external_embeddings load their
// table. An entry naming no vocabulary column is a ConfigError listing the columns.
std::vector<ConditionColumnSpec> conditionColumns(const ConditioningConfig& config,
                                                  const std::vector<data::Vocabulary>& vocabularies);

}  // namespace latentcell::priors
