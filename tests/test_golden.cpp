// Golden tests: latentcell's blocks, output heads and bottlenecks loaded with the weights that tests/golden/make_golden.py
// (plain PyTorch, written from the formulas) used, on its inputs, reproduce its outputs within
// 1e-5 in float32. The MCAB encoder-decoder cases (models/McabEncoderDecoder, one per count
// embedding) check the latent, the decoded genes and an MSE loss on them.
#include "TestUtil.h"
#include "core/Attention.h"
#include "core/DitBlock.h"
#include "core/Mcab.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "core/TimestepEmbedding.h"
#include "models/McabEncoderDecoder.h"
#include "heads/CeQuantHead.h"
#include "heads/HurdleHead.h"
#include "heads/MseHead.h"
#include "heads/NegativeBinomialHead.h"
#include "models/FsqBottleneck.h"
#include "models/GaussianBottleneck.h"
#include "priors/ArPrior.h"
#include "priors/DitBackbone.h"
#include "priors/FlowMatchingPrior.h"
#include "priors/JitTransportPrior.h"
#include "priors/MdlmPrior.h"

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

  // The small MCAB encoder-decoder of make_golden.py's mcab_autoencoder cases, forward and MSE loss.
  static void checkMcabAutoencoder(const GoldenCase& c, const std::string& count_embedding, bool latent_norm) {
    latentcell::models::McabConfig config;
    config.width = 16;
    config.heads = 4;
    config.cross_heads = 2;
    config.encoder_blocks = 1;
    config.decoder_blocks = 1;
    config.latent_tokens = 4;
    config.latent_dim = 6;
    config.count_embedding = count_embedding;
    config.count_mlp_hidden = 8;
    config.multiple_of = 16;
    config.latent_norm = latent_norm;
    latentcell::models::McabEncoderDecoder model(12, config);
    loadStateDict(model, c.weights, true, "mcab autoencoder golden");
    latentcell::models::CellBatch batch;
    batch.gene_ids = c.inputs.at("gene_ids");
    batch.counts = c.inputs.at("counts");
    batch.padding_mask = batch.gene_ids.eq(0);
    auto latent = model.encode(batch);
    auto decoded = model.decode(latent, c.inputs.at("decode_ids"));
    auto loss = torch::mse_loss(decoded, c.inputs.at("target")).reshape({1});
    expectClose(latent, c.outputs.at("latent"));
    expectClose(decoded, c.outputs.at("decoded"));
    expectClose(loss, c.outputs.at("loss"));
  }

  // Losses are scalars of any size (a velocity loss near t = 1 is in the hundreds): within 1e-5,
  // relative above 1.
  static void expectLossClose(const torch::Tensor& got, const torch::Tensor& want) {
    const double g = got.item<double>(), w = want.item<double>();
    EXPECT_LE(std::abs(g - w), 1e-5 * std::max(1.0, std::abs(w))) << "got " << g << ", want " << w;
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

TEST_F(Golden, McabAutoencoderConcatEmbeddingWithLatentNorm) {
  checkMcabAutoencoder(load("mcab_autoencoder_concat"), "concat", true);
}

TEST_F(Golden, McabAutoencoderLog1pEmbedding) {
  checkMcabAutoencoder(load("mcab_autoencoder_log1p"), "log1p", false);
}

TEST_F(Golden, McabAutoencoderMlpEmbeddingPerCellGenes) {
  checkMcabAutoencoder(load("mcab_autoencoder_mlp"), "mlp", false);
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
