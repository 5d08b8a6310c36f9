// Every building block's gradients (inputs and parameters) against central finite differences
// in double precision, on small inputs. Parameters are randomised first so that zero-initialised
// layers (adaLN-Zero) do not make the check trivial.
#include "core/Attention.h"
#include "core/DitBlock.h"
#include "core/FeedForward.h"
#include "core/Mcab.h"
#include "core/Norms.h"
#include "core/TimestepEmbedding.h"
#include "core/TransformerBlock.h"

#include "GradCheck.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

using namespace latentcell::core;
using latentcell::test::randomiseDouble;
using latentcell::test::withParameters;

namespace {

// 24 random entries of each tensor: the blocks here are small, so this covers a good share of them.
void expectGradientsMatch(const std::function<torch::Tensor()>& f, const latentcell::test::NamedTensors& wrt) {
  latentcell::test::expectGradientsMatch(f, wrt, 24);
}

torch::Tensor input(std::vector<int64_t> shape) {
  return torch::randn(shape, torch::kDouble).requires_grad_(true);
}

}  // namespace

TEST(GradCheck, CrossAttentionWithPadding) {
  torch::manual_seed(20);
  MultiHeadAttention mha(AttentionOptions{8, 2, 6});
  randomiseDouble(*mha);
  auto q = input({2, 3, 8}), kv = input({2, 5, 6});
  auto pad = torch::zeros({2, 5}, torch::kBool);
  pad.index_put_({1, torch::indexing::Slice(3)}, true);
  expectGradientsMatch([&] { return mha(q, kv, pad); }, withParameters(*mha, {{"q", q}, {"kv", kv}}));
}

TEST(GradCheck, CausalSelfAttention) {
  torch::manual_seed(21);
  MultiHeadAttention mha(AttentionOptions{8, 2});
  randomiseDouble(*mha);
  auto x = input({2, 4, 8});
  expectGradientsMatch([&] { return mha(x, x, torch::Tensor(), true); }, withParameters(*mha, {{"x", x}}));
}

TEST(GradCheck, FeedForwardsAndNorms) {
  torch::manual_seed(22);
  Mlp mlp(6, 10, Activation::GeluTanh);
  SwiGlu swiglu(6, 0, 8);
  RMSNorm rms(6);
  auto ln = makeLayerNorm(6);
  for (torch::nn::Module* m : std::vector<torch::nn::Module*>{mlp.get(), swiglu.get(), rms.get(), ln.get()})
    randomiseDouble(*m);
  auto x = input({3, 6});
  expectGradientsMatch([&] { return mlp(x); }, withParameters(*mlp, {{"x", x}}));
  expectGradientsMatch([&] { return swiglu(x); }, withParameters(*swiglu, {{"x", x}}));
  expectGradientsMatch([&] { return rms(x); }, withParameters(*rms, {{"x", x}}));
  expectGradientsMatch([&] { return ln(x); }, withParameters(*ln, {{"x", x}}));
}

TEST(GradCheck, TransformerBlock) {
  torch::manual_seed(23);
  TransformerBlock block(TransformerBlockOptions{8, 2, FeedForwardKind::SwiGlu, 4.0, 8});
  randomiseDouble(*block);
  auto x = input({2, 4, 8});
  auto pad = torch::zeros({2, 4}, torch::kBool);
  pad.index_put_({0, 3}, true);
  expectGradientsMatch([&] { return block(x, pad); }, withParameters(*block, {{"x", x}}));
}

TEST(GradCheck, McabPoolingAndUnpooling) {
  torch::manual_seed(24);
  Mcab pool(McabOptions{8, 6, 2, 3, FeedForwardKind::SwiGlu, 4.0, 8});
  Mcab unpool(McabOptions{8, 8, 2, 0, FeedForwardKind::Gelu});
  randomiseDouble(*pool);
  randomiseDouble(*unpool);
  auto kv = input({2, 5, 6});
  auto pad = torch::zeros({2, 5}, torch::kBool);
  pad.index_put_({1, 4}, true);
  expectGradientsMatch([&] { return pool(kv, pad); }, withParameters(*pool, {{"kv", kv}}));
  auto latent = input({2, 3, 8}), queries = input({4, 8});
  expectGradientsMatch([&] { return unpool(latent, torch::Tensor(), queries); },
                       withParameters(*unpool, {{"latent", latent}, {"queries", queries}}));
}

TEST(GradCheck, DitBlockAndFinalLayer) {
  torch::manual_seed(25);
  DitBlock block(DitBlockOptions{8, 2, 2.0});
  DitFinalLayer final_layer(8, 3);
  randomiseDouble(*block);
  randomiseDouble(*final_layer);
  auto x = input({2, 3, 8}), c = input({2, 8});
  expectGradientsMatch([&] { return block(x, c, torch::Tensor(), true); }, withParameters(*block, {{"x", x}, {"c", c}}));
  expectGradientsMatch([&] { return final_layer(x, c); }, withParameters(*final_layer, {{"x", x}, {"c", c}}));
}

TEST(GradCheck, TimestepEmbedding) {
  torch::manual_seed(26);
  TimestepEmbedding te(8, 16);
  randomiseDouble(*te);
  auto t = torch::tensor({0.1, 0.7, 3.0}, torch::kDouble);
  expectGradientsMatch([&] { return te(t); }, withParameters(*te, {}));
}
