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
