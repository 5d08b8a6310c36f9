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

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>

using namespace latentcell::core;

namespace {

constexpr double kEps = 1e-6;

void randomise(torch::nn::Module& m) {
  torch::NoGradGuard ng;
  m.to(torch::kDouble);
  for (auto& p : m.parameters()) p.copy_(0.4 * torch::randn_like(p));
}

// Checks d/dx of L = sum(f() * R) for every tensor in `wrt` at up to `samples` random entries.
void expectGradientsMatch(const std::function<torch::Tensor()>& f,
                          const std::vector<std::pair<std::string, torch::Tensor>>& wrt,
                          int64_t samples = 24) {
  auto out = f();
  auto weights = torch::randn_like(out);
  auto loss = [&] { return (f() * weights).sum(); };
  for (const auto& [name, t] : wrt) {
    if (t.grad().defined()) t.grad().zero_();
  }
  loss().backward();
  for (const auto& [name, t] : wrt) {
    ASSERT_TRUE(t.grad().defined()) << name << " received no gradient";
    auto grad = t.grad().reshape(-1);
    auto flat = t.data().view(-1);  // shares storage with t
    const int64_t n = flat.numel();
    auto picks = torch::randperm(n).narrow(0, 0, std::min(n, samples));
    for (int64_t k = 0; k < picks.numel(); ++k) {
      const int64_t i = picks[k].item<int64_t>();
      torch::NoGradGuard ng;
      const double orig = flat[i].item<double>();
      flat[i] = orig + kEps;
      const double up = loss().item<double>();
      flat[i] = orig - kEps;
      const double down = loss().item<double>();
      flat[i] = orig;
      const double numeric = (up - down) / (2 * kEps);
      const double analytic = grad[i].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << name << "[" << i << "]";
    }
  }
}

std::vector<std::pair<std::string, torch::Tensor>> withParams(
    torch::nn::Module& m, std::vector<std::pair<std::string, torch::Tensor>> inputs) {
  for (auto& item : m.named_parameters()) inputs.emplace_back(item.key(), item.value());
  return inputs;
}

torch::Tensor input(std::vector<int64_t> shape) {
  return torch::randn(shape, torch::kDouble).requires_grad_(true);
}

}  // namespace

TEST(GradCheck, CrossAttentionWithPadding) {
  torch::manual_seed(20);
  MultiHeadAttention mha(AttentionOptions{8, 2, 6});
  randomise(*mha);
  auto q = input({2, 3, 8}), kv = input({2, 5, 6});
  auto pad = torch::zeros({2, 5}, torch::kBool);
  pad.index_put_({1, torch::indexing::Slice(3)}, true);
  expectGradientsMatch([&] { return mha(q, kv, pad); }, withParams(*mha, {{"q", q}, {"kv", kv}}));
}

TEST(GradCheck, CausalSelfAttention) {
  torch::manual_seed(21);
  MultiHeadAttention mha(AttentionOptions{8, 2});
  randomise(*mha);
  auto x = input({2, 4, 8});
  expectGradientsMatch([&] { return mha(x, x, torch::Tensor(), true); }, withParams(*mha, {{"x", x}}));
}

TEST(GradCheck, FeedForwardsAndNorms) {
  torch::manual_seed(22);
  Mlp mlp(6, 10, Activation::GeluTanh);
  SwiGlu swiglu(6, 0, 8);
  RMSNorm rms(6);
  auto ln = makeLayerNorm(6);
  for (torch::nn::Module* m : std::vector<torch::nn::Module*>{mlp.get(), swiglu.get(), rms.get(), ln.get()})
    randomise(*m);
  auto x = input({3, 6});
  expectGradientsMatch([&] { return mlp(x); }, withParams(*mlp, {{"x", x}}));
  expectGradientsMatch([&] { return swiglu(x); }, withParams(*swiglu, {{"x", x}}));
  expectGradientsMatch([&] { return rms(x); }, withParams(*rms, {{"x", x}}));
  expectGradientsMatch([&] { return ln(x); }, withParams(*ln, {{"x", x}}));
}

TEST(GradCheck, TransformerBlock) {
  torch::manual_seed(23);
  TransformerBlock block(TransformerBlockOptions{8, 2, FeedForwardKind::SwiGlu, 4.0, 8});
  randomise(*block);
  auto x = input({2, 4, 8});
  auto pad = torch::zeros({2, 4}, torch::kBool);
  pad.index_put_({0, 3}, true);
  expectGradientsMatch([&] { return block(x, pad); }, withParams(*block, {{"x", x}}));
}

TEST(GradCheck, McabPoolingAndUnpooling) {
  torch::manual_seed(24);
  Mcab pool(McabOptions{8, 6, 2, 3, FeedForwardKind::SwiGlu, 4.0, 8});
  Mcab unpool(McabOptions{8, 8, 2, 0, FeedForwardKind::Gelu});
  randomise(*pool);
  randomise(*unpool);
  auto kv = input({2, 5, 6});
  auto pad = torch::zeros({2, 5}, torch::kBool);
  pad.index_put_({1, 4}, true);
  expectGradientsMatch([&] { return pool(kv, pad); }, withParams(*pool, {{"kv", kv}}));
  auto latent = input({2, 3, 8}), queries = input({4, 8});
  expectGradientsMatch([&] { return unpool(latent, torch::Tensor(), queries); },
                       withParams(*unpool, {{"latent", latent}, {"queries", queries}}));
}

TEST(GradCheck, DitBlockAndFinalLayer) {
  torch::manual_seed(25);
  DitBlock block(DitBlockOptions{8, 2, 2.0});
  DitFinalLayer final_layer(8, 3);
  randomise(*block);
  randomise(*final_layer);
  auto x = input({2, 3, 8}), c = input({2, 8});
  expectGradientsMatch([&] { return block(x, c, torch::Tensor(), true); }, withParams(*block, {{"x", x}, {"c", c}}));
  expectGradientsMatch([&] { return final_layer(x, c); }, withParams(*final_layer, {{"x", x}, {"c", c}}));
}

TEST(GradCheck, TimestepEmbedding) {
  torch::manual_seed(26);
  TimestepEmbedding te(8, 16);
  randomise(*te);
  auto t = torch::tensor({0.1, 0.7, 3.0}, torch::kDouble);
  expectGradientsMatch([&] { return te(t); }, withParams(*te, {}));
}
