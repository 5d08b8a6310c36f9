// The `head:` section of a stage-1 config and the factory that builds the head it names.
//
// One flat section covers every head kind, as users write it
// (`head: {kind: nb, dispersion: gene, library: observed}`): the fields of other kinds keep their
// defaults and are ignored, but a non-default value that a kind cannot honour is an error naming
// the key, so a sweep over `kind` cannot silently drop a setting. `library: auto` resolves per kind
// (observed for nb, hurdle and mse, which normalise by it; none for ce_quant, which models raw
// counts without it).
#pragma once

#include "core/Config.h"
#include "heads/OutputHead.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace latentcell::heads {

struct MmdConfig : core::ConfigSection {
  double weight = 0.0;
  std::vector<double> sigmas = {0.01, 0.1, 1.0, 10.0, 100.0};
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct HeadConfig : core::ConfigSection {
  std::string kind = "nb";
  std::string dispersion = "gene";
  std::string library = "auto";
  double library_kl_weight = 1.0;
  double target_sum = 1e4;
  int64_t singleton_bins = 8;
  int64_t quantile_bins = 7;
  std::vector<int64_t> tail_edges = {64, 96, 128, 192, 256};
  MmdConfig mmd;

  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
  // `library` with auto resolved for `kind`: "none", "observed" or "modeled".
  std::string resolvedLibrary() const;
};

struct HeadDims {
  int64_t width = 0;     // decoder output width per gene
  int64_t n_genes = 0;   // gene vocabulary size (gene-specific NB dispersion)
  int64_t cell_dim = 0;  // per-cell feature width (modeled library size)
};

// Builds the head `config` names. Throws std::invalid_argument when `dims` lack what it needs.
std::shared_ptr<OutputHead> makeHead(const HeadConfig& config, const HeadDims& dims);

}  // namespace latentcell::heads
