// Configuration of the stage-2 priors: one `prior` section with the family (`kind`), the DiT
// backbone, the conditioning, and one sub-section per family whose settings apply when that
// family is chosen. Declared once in visit() (core/Config.h): strict loading, dumping, docs and
// validation all come from it.
//
// Defaults follow the reference systems: the backbone is scLDM's public prior (D = 256, 8 blocks,
// 8 heads); conditioning dropout 0.1 with joint masking; flow matching samples with dopri5 at
// atol = rtol = 1e-5 and guidance w = 1 (scLDM); masked diffusion uses eps = 1e-3, antithetic
// times, no time conditioning and 128 denoising steps (MDLM, ExpressionVAE table 3); the
// transport prior is SCALE's x-pred/x-loss from the control set with t = sigmoid(N(-0.8, 0.8))
// and a 50-step Heun sampler (JiT).
#pragma once

#include "core/Config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::priors {

struct BackboneConfig : core::ConfigSection {
  int64_t dim = 256;
  int64_t depth = 8;
  int64_t heads = 8;
  double mlp_ratio = 4.0;
  double dropout = 0.0;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct ConditioningConfig : core::ConfigSection {
  double dropout = 0.1;
  std::string dropout_mode = "joint";
  std::vector<std::string> external_embeddings;  // "column=path" (.csv/.tsv/.safetensors/.h5ad)
  bool missing_as_null = false;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct ArConfig : core::ConfigSection {
  double temperature = 1.0;
  int64_t top_k = 0;
  bool kv_cache = true;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct MdlmConfig : core::ConfigSection {
  double eps = 1e-3;
  bool antithetic = true;
  int64_t steps = 128;
  bool time_conditioning = false;
  double time_scale = 1000.0;
  double temperature = 1.0;
  int64_t top_k = 0;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct FlowConfig : core::ConfigSection {
  std::string solver = "dopri5";
  int64_t steps = 100;
  double atol = 1e-5;
  double rtol = 1e-5;
  int64_t max_steps = 10000;
  double guidance = 1.0;
  std::string guidance_mode = "joint";
  std::vector<double> guidance_weights;
  double time_scale = 1.0;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct JitConfig : core::ConfigSection {
  std::string prediction = "x";
  std::string loss = "x";
  std::string start = "control";
  double control_scale = 0.5;
  std::string condition = "seed";
  int64_t seed_heads = 1;
  bool set_summary = false;
  double t_mean = -0.8;
  double t_std = 0.8;
  double t_clip = 0.05;
  std::string solver = "heun";
  int64_t steps = 50;
  int64_t cells = 0;
  double time_scale = 1.0;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

struct PriorConfig : core::ConfigSection {
  std::string kind = "flow";
  BackboneConfig backbone;
  ConditioningConfig conditioning;
  ArConfig ar;
  MdlmConfig mdlm;
  FlowConfig flow;
  JitConfig jit;
  void visit(core::ConfigVisitor& v) override;
  void validate() const override;
};

}  // namespace latentcell::priors
