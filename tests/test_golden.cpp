// Golden tests: latentcell's blocks loaded with the weights that tests/golden/make_golden.py
// (plain PyTorch, written from the formulas) used, on its inputs, reproduce its outputs within
// 1e-5 in float32.
#include "TestUtil.h"
#include "core/Attention.h"
#include "core/DitBlock.h"
#include "core/Mcab.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "core/TimestepEmbedding.h"
#include "priors/ArPrior.h"
#include "priors/DitBackbone.h"
#include "priors/FlowMatchingPrior.h"
#include "priors/JitTransportPrior.h"
#include "priors/MdlmPrior.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace latentcell::core;
using latentcell::test::TempDir;

namespace {

struct GoldenCase {
  std::vector<std::pair<std::string, torch::Tensor>> weights;
  std::map<std::string, torch::Tensor> inputs, outputs;
};

class Golden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (latentcell::test::pythonPath().empty()) return;
    dir_ = new TempDir();
    status_ = latentcell::test::runPython("tests/golden/make_golden.py", "'" + dir_->path().string() + "'");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    LATENTCELL_REQUIRE_PYTHON();
    ASSERT_EQ(status_, 0) << "tests/golden/make_golden.py failed";
  }

  static GoldenCase load(const std::string& name) {
    auto file = loadSafetensors(dir_->file(name + ".safetensors"));
    GoldenCase c;
    for (const auto& [key, t] : file.tensors) {
      if (key.rfind("weights.", 0) == 0) c.weights.emplace_back(key.substr(8), t);
      if (key.rfind("inputs.", 0) == 0) c.inputs[key.substr(7)] = t;
      if (key.rfind("outputs.", 0) == 0) c.outputs[key.substr(8)] = t;
    }
    return c;
  }

  static void expectClose(const torch::Tensor& got, const torch::Tensor& want) {
    ASSERT_EQ(got.sizes(), want.sizes());
    const double err = (got - want).abs().max().item<double>();
    EXPECT_LE(err, 1e-5) << "max abs error " << err;
  }

  // Losses are scalars of any size (a velocity loss near t = 1 is in the hundreds): within 1e-5,
  // relative above 1.
  static void expectLossClose(const torch::Tensor& got, const torch::Tensor& want) {
    const double g = got.item<double>(), w = want.item<double>();
    EXPECT_LE(std::abs(g - w), 1e-5 * std::max(1.0, std::abs(w))) << "got " << g << ", want " << w;
  }

  static TempDir* dir_;
  static int status_;
};

TempDir* Golden::dir_ = nullptr;
int Golden::status_ = -1;

}  // namespace

TEST_F(Golden, CrossAttentionWithPadding) {
  auto c = load("attention");
  MultiHeadAttention m(AttentionOptions{16, 4, 12});
  loadStateDict(*m, c.weights, true, "attention golden");
  expectClose(m(c.inputs["query"], c.inputs["context"], c.inputs["key_padding_mask"]), c.outputs["out"]);
}

TEST_F(Golden, CausalSelfAttention) {
  auto c = load("causal_attention");
  MultiHeadAttention m(AttentionOptions{16, 4});
  loadStateDict(*m, c.weights, true, "causal attention golden");
  auto x = c.inputs["x"];
  expectClose(m(x, x, torch::Tensor(), true), c.outputs["out"]);
}

TEST_F(Golden, McabWithPseudoInputs) {
  auto c = load("mcab");
  Mcab m(McabOptions{16, 12, 4, 6, FeedForwardKind::SwiGlu, 4.0, 16});
  loadStateDict(*m, c.weights, true, "mcab golden");
  expectClose(m(c.inputs["kv"], c.inputs["key_padding_mask"]), c.outputs["out"]);
}

TEST_F(Golden, DitBlock) {
  auto c = load("dit_block");
  DitBlock m(DitBlockOptions{16, 4, 4.0});
  loadStateDict(*m, c.weights, true, "dit block golden");
  expectClose(m(c.inputs["x"], c.inputs["c"]), c.outputs["out"]);
}

TEST_F(Golden, DitFinalLayer) {
  auto c = load("dit_final_layer");
  DitFinalLayer m(16, 3);
  loadStateDict(*m, c.weights, true, "dit final layer golden");
  expectClose(m(c.inputs["x"], c.inputs["c"]), c.outputs["out"]);
}

TEST_F(Golden, TimestepEmbedding) {
  auto c = load("timestep_embedding");
  TimestepEmbedding m(16, 256);
  loadStateDict(*m, c.weights, true, "timestep embedding golden");
  expectClose(m(c.inputs["t"]), c.outputs["out"]);
}

// ------------------------------------------------------------------------------------------------
// Stage-2 priors: backbone forward passes and losses with the random draws given as inputs.

namespace {

using namespace latentcell::priors;

// The columns of make_golden.py: a learned table of 3 labels and an external table of 4 labels
// with 5-dimensional vectors (the vectors and which labels have one come from the weights file).
std::vector<ConditionColumnSpec> goldenColumns() {
  return {ConditionColumnSpec{"cell_type", {"a", "b", "c"}, {}, {}},
          ConditionColumnSpec{"perturbation", {"ctrl", "g1", "g2", "g3"}, torch::zeros({4, 5}), {1, 0, 0, 0}}};
}

PriorConfig goldenConfig(const std::string& kind) {
  PriorConfig c;
  c.kind = kind;
  c.backbone.dim = 16;
  c.backbone.depth = 2;
  c.backbone.heads = 4;
  c.conditioning.dropout = 0.0;
  return c;
}

}  // namespace

TEST_F(Golden, DitBackboneCausalOverCodes) {
  auto c = load("dit_backbone_causal_codes");
  DitBackbone m(DitBackboneOptions{16, 2, 4, 4.0, 0.0, 0, /*vocab=*/11, /*positions=*/6, /*out_dim=*/10, /*causal=*/true});
  loadStateDict(*m, c.weights, true, "dit backbone golden");
  expectClose(m(c.inputs["tokens"], c.inputs["c"]), c.outputs["out"]);
}

TEST_F(Golden, DitBackboneSetWithConditionToken) {
  auto c = load("dit_backbone_set_token");
  DitBackbone m(DitBackboneOptions{16, 2, 4, 4.0, 0.0, /*in_dim=*/3, 0, /*positions=*/0, /*out_dim=*/3});
  loadStateDict(*m, c.weights, true, "dit backbone golden");
  expectClose(m(c.inputs["x"], c.inputs["c"], c.inputs["cond_token"]), c.outputs["out"]);
}

TEST_F(Golden, ArPriorLoss) {
  auto c = load("ar_loss");
  ArPrior prior(goldenConfig("ar"), 6, 10, goldenColumns());
  loadStateDict(prior, c.weights, true, "ar prior golden");
  expectLossClose(prior.lossAt(c.inputs["codes"], c.inputs["ids"], c.inputs["null"])[0].second, c.outputs["loss"]);
}

TEST_F(Golden, MdlmPriorLoss) {
  auto c = load("mdlm_loss");
  auto config = goldenConfig("mdlm");
  config.mdlm.time_conditioning = true;  // covers the timestep path (t * 1000)
  MdlmPrior prior(config, 6, 10, goldenColumns());
  loadStateDict(prior, c.weights, true, "mdlm prior golden");
  auto loss = prior.lossAt(c.inputs["codes"], c.inputs["ids"], c.inputs["t"], c.inputs["masked"], c.inputs["null"]);
  expectLossClose(loss[0].second, c.outputs["loss"]);
}

TEST_F(Golden, FlowMatchingPriorLoss) {
  auto c = load("flow_loss");
  FlowMatchingPrior prior(goldenConfig("flow"), 4, 3, goldenColumns());
  loadStateDict(prior, c.weights, true, "flow prior golden");
  auto loss = prior.lossAt(c.inputs["x1"], c.inputs["ids"], c.inputs["t"], c.inputs["x0"], c.inputs["null"]);
  expectLossClose(loss[0].second, c.outputs["loss"]);
}

TEST_F(Golden, JitTransportPriorLossesOfTheFourVariants) {
  auto c = load("jit_loss");
  for (std::string pred : {"x", "v"}) {
    for (std::string kind : {"x", "v"}) {
      auto config = goldenConfig("jit");
      config.jit.prediction = pred;
      config.jit.loss = kind;
      config.jit.set_summary = true;
      JitTransportPrior prior(config, 6, goldenColumns());
      loadStateDict(prior, c.weights, true, "jit prior golden");
      auto loss = prior.lossAt(c.inputs["x0"], c.inputs["x1"], c.inputs["ids"], c.inputs["t"], c.inputs["null"]);
      SCOPED_TRACE(pred + "-pred/" + kind + "-loss");
      expectLossClose(loss[0].second, c.outputs["loss_" + pred + kind]);
    }
  }
}
