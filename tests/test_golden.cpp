// Golden tests: latentcell's blocks, output heads and bottlenecks loaded with the weights that tests/golden/make_golden.py
// (plain PyTorch, written from the formulas) used, on its inputs, reproduce its outputs within
// 1e-5 in float32.
#include "TestUtil.h"
#include "core/Attention.h"
#include "core/DitBlock.h"
#include "core/Mcab.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "core/TimestepEmbedding.h"
#include "heads/CeQuantHead.h"
#include "heads/HurdleHead.h"
#include "heads/MseHead.h"
#include "heads/NegativeBinomialHead.h"
#include "models/FsqBottleneck.h"
#include "models/GaussianBottleneck.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

using namespace latentcell::core;
using latentcell::test::TempDir;

namespace {

struct GoldenCase {
  std::vector<std::pair<std::string, torch::Tensor>> weights;
  std::map<std::string, torch::Tensor> inputs, outputs;
};

class Golden : public ::testing::Test {
 protected:
  // make_golden.py costs a Python and torch start-up (seconds) and ctest runs every test case in a
  // process of its own, so its outputs are kept under the temp dir, keyed by the script's text and
  // the interpreter: made once per change of either, shared by all cases and concurrent runs. A
  // generation goes to a fresh directory renamed into place, so a half-written set is never used.
  static void SetUpTestSuite() {
    namespace fs = std::filesystem;
    const std::string python = latentcell::test::pythonPath();
    if (python.empty()) return;
    std::ifstream script(latentcell::test::sourcePath("tests/golden/make_golden.py"), std::ios::binary);
    std::stringstream text;
    text << script.rdbuf() << python;
    dir_ = fs::temp_directory_path() / fmt::format("latentcell-golden-{:016x}", std::hash<std::string>{}(text.str()));
    if (fs::exists(dir_ / "complete")) {
      status_ = 0;
      return;
    }
    TempDir fresh;
    status_ = latentcell::test::runPython("tests/golden/make_golden.py", "'" + fresh.path().string() + "'");
    if (status_ != 0) return;
    std::ofstream(fresh.file("complete")) << "ok\n";
    std::error_code ec;
    fs::rename(fresh.path(), dir_, ec);  // fails harmlessly when a concurrent run got there first
    if (!fs::exists(dir_ / "complete")) status_ = -1;
  }
  void SetUp() override {
    LATENTCELL_REQUIRE_PYTHON();
    ASSERT_EQ(status_, 0) << "tests/golden/make_golden.py failed";
  }

  static GoldenCase load(const std::string& name) {
    auto file = loadSafetensors((dir_ / (name + ".safetensors")).string());
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

  static std::filesystem::path dir_;
  static int status_;
};

std::filesystem::path Golden::dir_;
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

TEST_F(Golden, NegativeBinomialHead) {
  auto c = load("nb_head");
  latentcell::heads::NegativeBinomialOptions o;
  o.width = 6;
  o.n_genes = 10;
  latentcell::heads::NegativeBinomialHead head(o);
  loadStateDict(head, c.weights, true, "nb head golden");
  latentcell::heads::HeadContext ctx{c.inputs["gene_ids"], c.inputs["library"], {}};
  const auto& h = c.inputs["h"];
  expectClose(head.logLikelihood(h, c.inputs["counts"], ctx), c.outputs["log_likelihood"]);
  expectClose(head.loss(h, c.inputs["counts"], ctx).total, c.outputs["loss"]);
  expectClose(head.predict(h, ctx, latentcell::heads::PredictMode::Mean), c.outputs["mean"]);
}

TEST_F(Golden, HurdleHead) {
  auto c = load("hurdle_head");
  latentcell::heads::HurdleHead head(6);
  loadStateDict(head, c.weights, true, "hurdle head golden");
  latentcell::heads::HeadContext ctx{{}, c.inputs["library"], {}};
  expectClose(head.loss(c.inputs["h"], c.inputs["counts"], ctx).total, c.outputs["loss"]);
  expectClose(head.predict(c.inputs["h"], ctx, latentcell::heads::PredictMode::Mean), c.outputs["mean"]);
}

TEST_F(Golden, CeQuantHead) {
  auto c = load("ce_quant_head");
  latentcell::heads::CeQuantOptions o;
  o.width = 6;
  latentcell::heads::CeQuantHead head(o);
  loadStateDict(head, c.weights, true, "ce-quant head golden");
  const auto& h = c.inputs["h"];
  expectClose(head.logLikelihood(h, c.inputs["counts"], {}), c.outputs["log_likelihood"]);
  expectClose(head.loss(h, c.inputs["counts"], {}).total, c.outputs["loss"]);
  expectClose(head.predict(h, {}, latentcell::heads::PredictMode::Mean), c.outputs["mean"]);
}

TEST_F(Golden, MseHead) {
  auto c = load("mse_head");
  latentcell::heads::MseHead head(6);
  loadStateDict(head, c.weights, true, "mse head golden");
  latentcell::heads::HeadContext ctx{{}, c.inputs["library"], {}};
  expectClose(head.loss(c.inputs["h"], c.inputs["counts"], ctx).total, c.outputs["loss"]);
  expectClose(head.predict(c.inputs["h"], ctx, latentcell::heads::PredictMode::Mean), c.outputs["mean"]);
}

TEST_F(Golden, FsqBottleneck) {
  auto c = load("fsq_bottleneck");
  latentcell::models::FsqBottleneck fsq(latentcell::models::FsqBottleneckOptions{6, {8, 5, 4}});
  loadStateDict(fsq, c.weights, true, "fsq golden");
  auto out = fsq.forward(c.inputs["h"]);
  expectClose(out.z, c.outputs["z"]);
  EXPECT_TRUE(torch::equal(out.latent, c.outputs["codes"])) << out.latent << c.outputs["codes"];
}

TEST_F(Golden, GaussianBottleneck) {
  auto c = load("gaussian_bottleneck");
  latentcell::models::GaussianBottleneck g(latentcell::models::GaussianBottleneckOptions{6, 4, 0.5, false});
  loadStateDict(g, c.weights, true, "gaussian golden");
  g.eval();
  auto out = g.forward(c.inputs["h"]);
  expectClose(out.z, c.outputs["z"]);
  expectClose(out.terms[0].second, c.outputs["kl"]);
  expectClose(out.loss, c.outputs["loss"]);
}
