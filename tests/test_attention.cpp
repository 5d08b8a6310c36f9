// Multi-head attention: agreement with a naive softmax(QK^T/sqrt(d))V over the unmasked keys,
// invariance to padding, causal non-leakage, and KV-cached decoding equal to the full forward.
#include "core/Attention.h"
#include "core/DitBlock.h"
#include "core/TransformerBlock.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

using namespace latentcell::core;

namespace {

// Naive attention of one batch element over the keys `keep` selects, with the module's weights.
torch::Tensor naiveAttention(MultiHeadAttention& mha, const torch::Tensor& query,
                             const torch::Tensor& context, const std::vector<int64_t>& keep) {
  const auto& o = mha->options();
  const int64_t dh = o.dim / o.heads;
  auto idx = torch::tensor(keep, torch::kLong);
  auto ctx = context.index_select(0, idx);                       // [nk', kv_dim]
  auto q = torch::matmul(query, mha->q_proj->weight.t()) + mha->q_proj->bias;  // [nq, dim]
  auto k = torch::matmul(ctx, mha->k_proj->weight.t()) + mha->k_proj->bias;    // [nk', dim]
  auto v = torch::matmul(ctx, mha->v_proj->weight.t()) + mha->v_proj->bias;
  std::vector<torch::Tensor> heads;
  for (int64_t h = 0; h < o.heads; ++h) {
    auto qh = q.narrow(1, h * dh, dh), kh = k.narrow(1, h * dh, dh), vh = v.narrow(1, h * dh, dh);
    auto scores = torch::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(dh));  // [nq, nk']
    auto p = torch::exp(scores - std::get<0>(scores.max(1, true)));
    p = p / p.sum(1, true);
    heads.push_back(torch::matmul(p, vh));
  }
  auto out = torch::cat(heads, 1);
  return torch::matmul(out, mha->out_proj->weight.t()) + mha->out_proj->bias;
}

}  // namespace

TEST(Attention, MaskedEqualsNaiveWithoutMaskedKeys) {
  torch::manual_seed(0);
  MultiHeadAttention mha(AttentionOptions{16, 4, 12});
  mha->eval();
  auto query = torch::randn({3, 5, 16});
  auto context = torch::randn({3, 7, 12});
  auto pad = torch::zeros({3, 7}, torch::kBool);
  pad.index_put_({0, torch::indexing::Slice(4)}, true);  // 4 valid keys
  pad.index_put_({1, 1}, true);                          // a hole in the middle
  pad.index_put_({1, 5}, true);
  auto out = mha(query, context, pad);
  for (int64_t b = 0; b < 3; ++b) {
    std::vector<int64_t> keep;
    for (int64_t j = 0; j < 7; ++j)
      if (!pad[b][j].item<bool>()) keep.push_back(j);
    auto ref = naiveAttention(mha, query[b], context[b], keep);
    EXPECT_TRUE(torch::allclose(out[b], ref, 1e-5, 1e-5)) << "batch " << b;
  }
}

TEST(Attention, PaddingDoesNotChangeOutputs) {
  torch::manual_seed(1);
  MultiHeadAttention mha(AttentionOptions{8, 2});
  auto query = torch::randn({2, 3, 8});
  auto context = torch::randn({2, 5, 8});
  auto base = mha(query, context);
  for (int64_t extra : {1, 4, 11}) {
    auto padded = torch::cat({context, 100 * torch::randn({2, extra, 8})}, 1);
    auto pad = torch::zeros({2, 5 + extra}, torch::kBool);
    pad.narrow(1, 5, extra).fill_(true);
    EXPECT_TRUE(torch::allclose(mha(query, padded, pad), base, 1e-6, 1e-6)) << extra;
  }
}

TEST(Attention, AllKeysMaskedGivesFiniteOutputIndependentOfValues) {
  torch::manual_seed(2);
  MultiHeadAttention mha(AttentionOptions{8, 2});
  auto query = torch::randn({1, 3, 8});
  auto pad = torch::ones({1, 4}, torch::kBool);
  auto a = mha(query, torch::randn({1, 4, 8}), pad);
  auto b = mha(query, torch::randn({1, 4, 8}), pad);
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(Attention, CausalMaskPreventsLeakage) {
  torch::manual_seed(3);
  MultiHeadAttention mha(AttentionOptions{8, 2});
  auto x = torch::randn({2, 6, 8});
  auto out = mha(x, x, torch::Tensor(), /*causal=*/true);
  auto y = x.clone();
  y.narrow(1, 4, 2).copy_(torch::randn({2, 2, 8}));  // change tokens 4 and 5
  auto out2 = mha(y, y, torch::Tensor(), true);
  EXPECT_TRUE(torch::allclose(out.narrow(1, 0, 4), out2.narrow(1, 0, 4), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(out.narrow(1, 4, 2), out2.narrow(1, 4, 2), 1e-3, 1e-3));
  // The explicit-mask path (causal + padding) must agree with SDPA's built-in causal path.
  auto no_pad = torch::zeros({2, 6}, torch::kBool);
  EXPECT_TRUE(torch::allclose(mha(x, x, no_pad, true), out, 1e-6, 1e-6));
}

TEST(Attention, KvCachedDecodingEqualsFullForward) {
  torch::manual_seed(4);
  MultiHeadAttention mha(AttentionOptions{16, 4});
  auto x = torch::randn({2, 7, 16});
  auto full = mha(x, x, torch::Tensor(), true);
  KvCache cache;
  std::vector<torch::Tensor> steps;
  for (int64_t t = 0; t < 7; ++t) {
    auto xt = x.narrow(1, t, 1);
    steps.push_back(mha(xt, xt, torch::Tensor(), true, &cache));
  }
  EXPECT_EQ(cache.length(), 7);
  EXPECT_TRUE(torch::allclose(torch::cat(steps, 1), full, 1e-5, 1e-6));
  // A prefix of 3 then chunks of 2 and 2: chunked prefill must agree as well.
  cache.reset();
  auto a = mha(x.narrow(1, 0, 3), x.narrow(1, 0, 3), torch::Tensor(), true, &cache);
  auto b = mha(x.narrow(1, 3, 2), x.narrow(1, 3, 2), torch::Tensor(), true, &cache);
  auto c = mha(x.narrow(1, 5, 2), x.narrow(1, 5, 2), torch::Tensor(), true, &cache);
  EXPECT_TRUE(torch::allclose(torch::cat({a, b, c}, 1), full, 1e-5, 1e-6));
}

TEST(Attention, KvCacheKeepsPaddingOfEarlierSteps) {
  torch::manual_seed(5);
  MultiHeadAttention mha(AttentionOptions{8, 2});
  auto x = torch::randn({2, 5, 8});
  auto pad = torch::zeros({2, 5}, torch::kBool);
  pad.index_put_({1, 1}, true);
  auto full = mha(x, x, pad, true);
  KvCache cache;
  std::vector<torch::Tensor> steps;
  for (int64_t t = 0; t < 5; ++t) {
    auto xt = x.narrow(1, t, 1);
    steps.push_back(mha(xt, xt, pad.narrow(1, t, 1), true, &cache));
  }
  EXPECT_TRUE(torch::allclose(torch::cat(steps, 1), full, 1e-5, 1e-6));
}

TEST(Attention, BlocksDecodeIncrementallyWithCache) {
  torch::manual_seed(6);
  TransformerBlock block(TransformerBlockOptions{16, 4});
  DitBlock dit(DitBlockOptions{16, 4});
  {
    torch::NoGradGuard ng;
    for (auto& p : dit->parameters()) p.copy_(0.2 * torch::randn_like(p));  // non-trivial adaLN
  }
  auto x = torch::randn({2, 6, 16});
  auto c = torch::randn({2, 16});
  auto full_t = block(x, torch::Tensor(), true);
  auto full_d = dit(x, c, torch::Tensor(), true);
  KvCache ct, cd;
  std::vector<torch::Tensor> st, sd;
  for (int64_t t = 0; t < 6; ++t) {
    st.push_back(block(x.narrow(1, t, 1), torch::Tensor(), true, &ct));
    sd.push_back(dit(x.narrow(1, t, 1), c, torch::Tensor(), true, &cd));
  }
  EXPECT_TRUE(torch::allclose(torch::cat(st, 1), full_t, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(torch::cat(sd, 1), full_d, 1e-5, 1e-5));
}

TEST(Attention, RejectsDimNotDivisibleByHeads) {
  EXPECT_THROW(MultiHeadAttention(AttentionOptions{10, 3}), std::invalid_argument);
}
