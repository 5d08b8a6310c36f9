// The `bottleneck:` section of a stage-1 config and the factory that builds the bottleneck it
// names (`bottleneck: {kind: fsq, levels: [8, 8, 8]}`, `{kind: gaussian, beta: 1e-5}`).
// Fields of other kinds keep their defaults and are ignored; a non-default value a kind cannot
// honour is an error naming the key.
#pragma once

#include "core/Config.h"
#include "models/Bottleneck.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace latentcell::models {

struct BottleneckConfig : core::ConfigSection {
  std::string kind = "gaussian";
  int64_t latent_dim = 0;
  double beta = 2e-6;
  bool deterministic = false;
  std::vector<int64_t> levels = {8, 8, 8};
  double dither = 0.0;
  double bound_penalty = 0.0;

  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

// Builds the bottleneck `config` names for encoder outputs of width `in_dim`.
std::shared_ptr<Bottleneck> makeBottleneck(const BottleneckConfig& config, int64_t in_dim);

}  // namespace latentcell::models
