// Building blocks: MCAB permutation invariance/equivariance and padding invariance, adaLN-Zero
// identity at initialisation, the timestep embedding formula, RMSNorm, SwiGLU sizing.
#include "core/DitBlock.h"
#include "core/FeedForward.h"
#include "core/Mcab.h"
#include "core/Norms.h"
#include "core/TimestepEmbedding.h"
#include "core/TransformerBlock.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

using namespace latentcell::core;

TEST(Mcab, PseudoInputsInvariantToSetOrderAndPadding) {
  torch::manual_seed(10);
  Mcab pool(McabOptions{16, 12, 4, /*num_queries=*/5});
  auto kv = torch::randn({3, 9, 12});
  auto out = pool(kv);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 5, 16}));
  for (int trial = 0; trial < 3; ++trial) {
    auto perm = torch::randperm(9);
    EXPECT_TRUE(torch::allclose(pool(kv.index_select(1, perm)), out, 1e-5, 1e-6));
  }
  for (int64_t extra : {1, 7}) {
    // Padding interleaved at random positions, holding arbitrary values.
    auto padded = torch::cat({kv, 50 * torch::randn({3, extra, 12})}, 1);
    auto pad = torch::zeros({3, 9 + extra}, torch::kBool);
    pad.narrow(1, 9, extra).fill_(true);
    auto perm = torch::randperm(9 + extra);
    EXPECT_TRUE(torch::allclose(pool(padded.index_select(1, perm), pad.index_select(1, perm)), out,
                                1e-5, 1e-6));
  }
}

TEST(Mcab, GivenQueriesEquivariantToQueryOrder) {
  torch::manual_seed(11);
  Mcab unpool(McabOptions{16, 8, 4, /*num_queries=*/0});
  auto latent = torch::randn({2, 6, 8});
  auto queries = torch::randn({10, 16});  // e.g. the embeddings of 10 genes
  auto out = unpool(latent, torch::Tensor(), queries);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 10, 16}));
  auto perm = torch::randperm(10);
  EXPECT_TRUE(torch::allclose(unpool(latent, torch::Tensor(), queries.index_select(0, perm)),
                              out.index_select(1, perm), 1e-5, 1e-6));
  // Batched queries give the same as shared ones.
  EXPECT_TRUE(torch::allclose(unpool(latent, torch::Tensor(), queries.unsqueeze(0).expand({2, 10, 16})), out, 1e-6, 1e-6));
}

TEST(Mcab, RejectsMissingOrUnexpectedQueries) {
  Mcab pool(McabOptions{8, 8, 2, 3});
  Mcab unpool(McabOptions{8, 8, 2, 0});
  auto kv = torch::randn({1, 4, 8});
  EXPECT_THROW(pool(kv, torch::Tensor(), torch::randn({2, 8})), std::invalid_argument);
  EXPECT_THROW(unpool(kv), std::invalid_argument);
}

TEST(Dit, ZeroInitialisedBlockIsIdentity) {
  torch::manual_seed(12);
  DitBlock block(DitBlockOptions{16, 4});
  auto x = torch::randn({2, 5, 16});
  auto c = torch::randn({2, 16});
  EXPECT_TRUE(torch::equal(block(x, c), x));
  EXPECT_TRUE(torch::equal(block(x, torch::randn({2, 5, 16}), torch::Tensor(), true), x));  // per-token c, causal
  DitFinalLayer final_layer(16, 3);
  EXPECT_TRUE(torch::equal(final_layer(x, c), torch::zeros({2, 5, 3})));
}

TEST(Dit, ModulationChangesOutputOnceTrained) {
  torch::manual_seed(13);
  DitBlock block(DitBlockOptions{8, 2});
  {
    torch::NoGradGuard ng;
    block->ada_ln->weight.normal_(0, 0.5);
  }
  auto x = torch::randn({2, 3, 8});
  auto y1 = block(x, torch::randn({2, 8}));
  auto y2 = block(x, torch::randn({2, 8}));
  EXPECT_FALSE(torch::allclose(y1, x, 1e-3, 1e-3));
  EXPECT_FALSE(torch::allclose(y1, y2, 1e-3, 1e-3));
}

TEST(Dit, ModulateFormula) {
  auto x = torch::randn({2, 3, 4});
  auto shift = torch::randn({2, 1, 4});
  auto scale = torch::randn({2, 1, 4});
  EXPECT_TRUE(torch::allclose(modulate(x, shift, scale), x + x * scale + shift, 1e-6, 1e-6));
}

TEST(TimestepEmbedding, MatchesFormula) {
  auto t = torch::tensor({0.0, 0.25, 1.0, 500.0, 999.0}, torch::kDouble);
  const int64_t dim = 256, half = 128;
  auto emb = sinusoidalEmbedding(t, dim);
  ASSERT_EQ(emb.sizes(), (std::vector<int64_t>{5, 256}));
  for (int64_t b = 0; b < 5; ++b) {
    const double tb = t[b].item<double>();
    for (int64_t i = 0; i < half; ++i) {
      const double f = std::exp(-std::log(10000.0) * static_cast<double>(i) / half);
      EXPECT_NEAR(emb[b][i].item<double>(), std::cos(tb * f), 1e-9);
      EXPECT_NEAR(emb[b][half + i].item<double>(), std::sin(tb * f), 1e-9);
    }
  }
  auto odd = sinusoidalEmbedding(t, 7);
  EXPECT_EQ(odd.size(1), 7);
  EXPECT_TRUE(torch::equal(odd.select(1, 6), torch::zeros({5}, torch::kDouble)));
  TimestepEmbedding te(32);
  EXPECT_EQ(te(t.to(torch::kFloat)).sizes(), (std::vector<int64_t>{5, 32}));
}

TEST(Norms, RmsNormMatchesFormulaAndLayerNormAffineSwitch) {
  RMSNorm rms(6, 1e-6);
  {
    torch::NoGradGuard ng;
    rms->weight.copy_(torch::arange(1, 7).to(torch::kFloat));
  }
  auto x = torch::randn({3, 6});
  auto ref = x / torch::sqrt(x.pow(2).mean(-1, true) + 1e-6) * torch::arange(1, 7);
  EXPECT_TRUE(torch::allclose(rms(x), ref, 1e-5, 1e-6));
  EXPECT_EQ(RMSNorm(6, 1e-6, false)->parameters().size(), 0u);
  EXPECT_EQ(makeLayerNorm(6, false)->parameters().size(), 0u);
  EXPECT_EQ(makeLayerNorm(6, true)->parameters().size(), 2u);
}

TEST(FeedForward, SwiGluHiddenWidthAndFormula) {
  EXPECT_EQ(SwiGluImpl::defaultHidden(128, 64), 384);  // 2*4*128/3 = 341 -> 384
  EXPECT_EQ(SwiGluImpl::defaultHidden(96, 32), 256);
  SwiGlu ff(8, 0, 16);
  EXPECT_EQ(ff->w1->weight.size(0), 32);
  auto x = torch::randn({2, 8});
  auto ref = torch::matmul(torch::silu(torch::matmul(x, ff->w1->weight.t())) *
                               torch::matmul(x, ff->w2->weight.t()),
                           ff->w3->weight.t());
  EXPECT_TRUE(torch::allclose(ff(x), ref, 1e-5, 1e-6));
  EXPECT_THROW(parseFeedForwardKind("relu"), std::invalid_argument);
}
