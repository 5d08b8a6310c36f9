// Prior factory (see PriorFactory.h).
#include "priors/PriorFactory.h"

#include "core/Config.h"
#include "data/ConditionEmbeddings.h"
#include "data/Conditions.h"
#include "priors/ArPrior.h"
#include "priors/FlowMatchingPrior.h"
#include "priors/JitTransportPrior.h"
#include "priors/MdlmPrior.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>

namespace latentcell::priors {

LatentKind latentKindOf(const std::string& prior_kind) {
  if (prior_kind == "ar" || prior_kind == "mdlm") return LatentKind::Codes;
  if (prior_kind == "flow" || prior_kind == "jit") return LatentKind::Continuous;
  throw core::ConfigError("prior.kind must be one of ar, mdlm, flow, jit; got '" + prior_kind + "'");
}

void checkLatentCompatibility(const std::string& prior_kind, LatentKind available, const std::string& bottleneck) {
  const LatentKind needed = latentKindOf(prior_kind);
  if (needed == available) return;
  const std::string which = bottleneck.empty() ? std::string() : " (bottleneck '" + bottleneck + "')";
  if (needed == LatentKind::Codes) {
    throw core::ConfigError(fmt::format(
        "prior.kind '{}' models FSQ code indices but the autoencoder{} produces continuous latents: use prior.kind "
        "flow or jit, or train the autoencoder with an fsq bottleneck",
        prior_kind, which));
  }
  throw core::ConfigError(fmt::format(
      "prior.kind '{}' models continuous latents but the autoencoder{} produces FSQ code indices: use prior.kind ar "
      "or mdlm, or train the autoencoder with a gaussian bottleneck",
      prior_kind, which));
}

std::shared_ptr<Prior> makePrior(const PriorConfig& config, const PriorContext& context) {
  checkLatentCompatibility(config.kind, context.latents, context.bottleneck);
  if (context.tokens <= 0) throw core::ConfigError("prior: the autoencoder reports no latent tokens");
  if (config.kind == "ar" || config.kind == "mdlm") {
    if (context.codebook <= 1) throw core::ConfigError("prior: the FSQ autoencoder reports no codebook size");
    if (config.kind == "ar") return std::make_shared<ArPrior>(config, context.tokens, context.codebook, context.columns);
    return std::make_shared<MdlmPrior>(config, context.tokens, context.codebook, context.columns);
  }
  if (context.latent_dim <= 0) throw core::ConfigError("prior: the autoencoder reports no latent width");
  if (config.kind == "flow") {
    return std::make_shared<FlowMatchingPrior>(config, context.tokens, context.latent_dim, context.columns);
  }
  return std::make_shared<JitTransportPrior>(config, context.tokens * context.latent_dim, context.columns);
}

std::vector<ConditionColumnSpec> conditionColumns(const ConditioningConfig& config,
                                                  const std::vector<data::Vocabulary>& vocabularies) {
  std::map<std::string, std::string> external;  // column -> path
  for (const auto& entry : config.external_embeddings) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos) {
      throw core::ConfigError("conditioning.external_embeddings: entry '" + entry + "' must be 'column=path'");
    }
    external[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  std::vector<std::string> names;
  for (const auto& v : vocabularies) names.push_back(v.column);
  for (const auto& [column, path] : external) {
    if (std::find(names.begin(), names.end(), column) == names.end()) {
      throw core::ConfigError(fmt::format(
          "conditioning.external_embeddings: '{}' is not a condition column (columns: {}); use one of them", column,
          fmt::join(names, ", ")));
    }
  }
  std::vector<ConditionColumnSpec> columns;
  for (const auto& v : vocabularies) {
    auto it = external.find(v.column);
    if (it == external.end()) {
      columns.push_back(ConditionColumnSpec{v.column, v.values, {}, {}});
    } else {
      columns.push_back(externalColumn(v.column, v.values, data::loadEmbeddingTable(it->second), config.missing_as_null));
    }
  }
  return columns;
}

}  // namespace latentcell::priors
