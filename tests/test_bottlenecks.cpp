// Bottlenecks (models/): FSQ values on the grid, code indices that round-trip, straight-through
// gradients equal to the derivative of the pre-rounding map, code-usage perplexity against a hand
// value; the Gaussian KL against its closed form and torch.distributions, reparameterised sampling
// and the deterministic mode; the identity bottleneck; the config and factory with their errors.
#include "TestUtil.h"
#include "core/Config.h"
#include "core/Random.h"
#include "core/Safetensors.h"
#include "models/BottleneckConfig.h"
#include "models/FsqBottleneck.h"
#include "models/GaussianBottleneck.h"
#include "models/IdentityBottleneck.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

using namespace latentcell;
using namespace latentcell::models;

namespace {

struct Root : core::ConfigSection {
  BottleneckConfig bottleneck;
  void visit(core::ConfigVisitor& v) override { v.section("bottleneck", bottleneck, "latent bottleneck"); }
};

BottleneckConfig bottleneckConfig(const std::string& yaml) {
  Root root;
  core::loadConfigText(root, yaml, "test.yaml");
  return root.bottleneck;
}

}  // namespace

// ---------------------------------------------------------------- FSQ

TEST(Fsq, ValuesLieOnTheGrid) {
  torch::manual_seed(1);
  FsqBottleneck fsq(FsqBottleneckOptions{6, {8, 5, 4, 3}});
  fsq.to(torch::kDouble);
  auto z = torch::randn({64, 10, 4}, torch::kDouble) * 4.0;  // wide inputs reach the grid ends
  auto zq = fsq.quantize(z);
  const int64_t levels[4] = {8, 5, 4, 3};
  for (int d = 0; d < 4; ++d) {
    SCOPED_TRACE("dimension " + std::to_string(d));
    const int64_t hw = levels[d] / 2;
    auto digits = zq.select(-1, d) * hw + hw;  // should be the integers 0 .. L-1
    EXPECT_TRUE(torch::allclose(digits, digits.round(), 0, 1e-12));
    auto used = std::get<0>(torch::_unique(digits.round()));
    EXPECT_EQ(used.min().item<double>(), 0.0);
    EXPECT_EQ(used.max().item<double>(), levels[d] - 1.0);
    EXPECT_EQ(used.numel(), levels[d]);  // every grid value is reachable, none outside
  }
}

TEST(Fsq, IndicesRoundTripForEveryCode) {
  FsqBottleneck fsq(FsqBottleneckOptions{4, {3, 4, 5}});
  fsq.to(torch::kDouble);
  ASSERT_EQ(fsq.codebookSize(), 60);
  auto codes = torch::arange(60, torch::kLong);
  auto values = fsq.valuesFromCodes(codes);  // [60, 3]
  EXPECT_TRUE(torch::equal(fsq.codesFromValues(values), codes));
  // 60 distinct points, each on the grid (quantize leaves grid points where they are).
  EXPECT_EQ(std::get<0>(torch::unique_dim(values, 0)).size(0), 60);
  // Code 0 is every digit at its minimum, the last code every digit at its maximum.
  EXPECT_TRUE(torch::allclose(values[0], torch::tensor({-1.0, -1.0, -1.0}, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(values[59], torch::tensor({1.0, 0.5, 1.0}, torch::kDouble)));
  // Mixed radix with basis [1, 3, 12]: digits (2, 1, 3) -> 2 + 3 + 36 = 41.
  auto v41 = torch::tensor({(2 - 1) / 1.0, (1 - 2) / 2.0, (3 - 2) / 2.0}, torch::kDouble);
  EXPECT_EQ(fsq.codesFromValues(v41).item<int64_t>(), 41);
}

TEST(Fsq, GradientsPassStraightThroughRounding) {
  torch::manual_seed(2);
  FsqBottleneck fsq(FsqBottleneckOptions{4, {8, 5}});
  fsq.to(torch::kDouble);
  auto z = (torch::randn({50, 2}, torch::kDouble) * 1.5).requires_grad_(true);
  auto w = torch::randn({50, 2}, torch::kDouble);
  (fsq.quantize(z) * w).sum().backward();
  // d zq / d z = d/dz [tanh(z + shift) * half - offset] / (L // 2).
  const double eps = 1e-3;
  for (int d = 0; d < 2; ++d) {
    const double L = d == 0 ? 8 : 5, hw = std::floor(L / 2);
    const double half = (L - 1) * (1 - eps) / 2, offset = d == 0 ? 0.5 : 0.0, shift = std::atanh(offset / half);
    auto t = torch::tanh(z.detach().select(1, d) + shift);
    auto want = w.select(1, d) * half * (1 - t * t) / hw;
    EXPECT_TRUE(torch::allclose(z.grad().select(1, d), want, 1e-12, 1e-12)) << "dimension " << d;
  }
}

TEST(Fsq, PerplexityEqualsHandValue) {
  // Codes {0, 0, 1, 2} of 4: p = (1/2, 1/4, 1/4, 0), H = 1.5 ln 2, perplexity 2^1.5.
  EXPECT_NEAR(codePerplexity(torch::tensor({0, 0, 1, 2}, torch::kLong), 4).item<double>(), std::pow(2.0, 1.5), 1e-12);
  EXPECT_NEAR(codePerplexity(torch::arange(512, torch::kLong), 512).item<double>(), 512.0, 1e-9);
  EXPECT_NEAR(codePerplexity(torch::full({10}, 7, torch::kLong), 512).item<double>(), 1.0, 1e-12);
}

TEST(Fsq, ForwardCodesDecodeToTheSameDecoderInput) {
  torch::manual_seed(3);
  FsqBottleneck fsq(FsqBottleneckOptions{6, {8, 8, 8}});
  fsq.to(torch::kDouble);
  auto h = torch::randn({4, 5, 6}, torch::kDouble);
  auto out = fsq.forward(h);
  ASSERT_EQ(out.latent.scalar_type(), torch::kLong);
  ASSERT_EQ(out.latent.sizes(), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(out.z.sizes(), h.sizes());
  EXPECT_TRUE(torch::allclose(fsq.decodeInput(out.latent), out.z, 0, 1e-12));
  EXPECT_EQ(out.loss.item<double>(), 0.0);
  ASSERT_EQ(out.terms.size(), 1u);
  EXPECT_EQ(out.terms[0].first, "perplexity");
  EXPECT_NEAR(out.terms[0].second.item<double>(), codePerplexity(out.latent, 512).item<double>(), 1e-12);
  EXPECT_TRUE(fsq.discrete());
  EXPECT_EQ(fsq.codebookSize(), 512);
  // Gradients reach the encoder output and both projections.
  auto hg = h.clone().requires_grad_(true);
  fsq.forward(hg).z.sum().backward();
  EXPECT_GT(hg.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(fsq.project_in->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_NE(test::errorOf([&] { fsq.decodeInput(torch::tensor({{0, 512}}, torch::kLong)); }).find("0..511"),
            std::string::npos);
}

TEST(Fsq, DitherReplacesRoundingByOneCellOfNoiseInTrainingOnly) {
  torch::manual_seed(4);
  FsqBottleneck fsq(FsqBottleneckOptions{6, {8, 5}, /*dither=*/0.5});
  fsq.to(torch::kDouble);
  auto z = torch::randn({4000, 2}, torch::kDouble);
  auto rounded = fsq.quantize(z);
  auto dithered = fsq.quantizeDithered(z, core::makeGenerator(9));  // [4000, 2]
  const double hw[2] = {4, 2};
  auto off_grid = torch::zeros({4000, 2}, torch::kBool);
  for (int d = 0; d < 2; ++d) {
    SCOPED_TRACE("dimension " + std::to_string(d));
    auto level_units = dithered.select(1, d) * hw[d];
    off_grid.select(1, d).copy_((level_units - level_units.round()).abs() > 1e-9);
    // Within one rounding cell of the value before rounding: |noisy - bound(z)| <= 0.5 level.
    auto pre = (rounded.select(1, d) * hw[d]);  // the rounded value, within 0.5 of bound(z)
    EXPECT_LE((level_units - pre).abs().max().item<double>(), 1.0 + 1e-12);
  }
  // About half the values are noisy (binomial, 8000 draws: 0.5 +- 5 SE).
  const double share = off_grid.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(share, 0.5, 5 * std::sqrt(0.25 / 8000));
  // The rest are exactly the rounded values.
  EXPECT_TRUE(torch::equal(dithered.masked_select(off_grid.logical_not()), rounded.masked_select(off_grid.logical_not())));

  // forward: dithered decoder input in training, the grid in eval; codes always from the grid.
  auto h = torch::randn({64, 3, 6}, torch::kDouble);
  fsq.train();
  auto train_out = fsq.forward(h);
  fsq.eval();
  auto eval_out = fsq.forward(h);
  EXPECT_TRUE(torch::equal(train_out.latent, eval_out.latent));
  EXPECT_TRUE(torch::allclose(fsq.decodeInput(eval_out.latent), eval_out.z, 0, 1e-12));
  EXPECT_FALSE(torch::allclose(train_out.z, eval_out.z, 0, 1e-6));
}

TEST(Fsq, BoundPenaltyIsWeightedSumOfSquaresAndPullsBackSaturatedValues) {
  torch::manual_seed(5);
  FsqBottleneck fsq(FsqBottleneckOptions{3, {8, 8}, 0.0, /*bound_penalty=*/0.1});
  fsq.to(torch::kDouble);
  auto h = torch::randn({5, 4, 3}, torch::kDouble);
  auto out = fsq.forward(h);
  auto z = fsq.project_in->forward(h);  // [5, 4, 2]
  const double penalty = z.square().sum({1, 2}).mean().item<double>();
  EXPECT_NEAR(out.loss.item<double>(), 0.1 * penalty, 1e-12);
  ASSERT_EQ(out.terms.size(), 2u);
  EXPECT_EQ(out.terms[0].first, "bound_penalty");
  EXPECT_NEAR(out.terms[0].second.item<double>(), penalty, 1e-12);
  // A saturated value gets almost no gradient through tanh; the penalty's, 2 w z / cells, remains.
  auto far = torch::full({1, 1, 2}, 12.0, torch::kDouble).requires_grad_(true);
  fsq.quantize(far).sum().backward();
  EXPECT_LT(far.grad().abs().max().item<double>(), 1e-8);
  auto big_h = (h * 100.0).requires_grad_(true);  // saturates every value
  fsq.forward(big_h).z.sum().backward();
  const double through_tanh = big_h.grad().abs().max().item<double>();
  big_h.grad().zero_();
  fsq.forward(big_h).loss.backward();
  EXPECT_GT(big_h.grad().abs().max().item<double>(), 1e3 * through_tanh);
  EXPECT_THROW(FsqBottleneck(FsqBottleneckOptions{3, {8}, 1.5}), std::invalid_argument);
  EXPECT_THROW(FsqBottleneck(FsqBottleneckOptions{3, {8}, 0.0, -1.0}), std::invalid_argument);
}

// ---------------------------------------------------------------- Gaussian

TEST(Gaussian, KlEqualsClosedFormAndTorch) {
  // Hand value: mu = (1, 0), logvar = (0, ln 2): 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - ln 2)].
  auto kl = klToStandardNormal(torch::tensor({{1.0, 0.0}}, torch::kDouble),
                               torch::tensor({{0.0, std::log(2.0)}}, torch::kDouble));
  EXPECT_NEAR(kl.item<double>(), 0.5 * (1.0 + 1.0 - std::log(2.0)), 1e-14);

  LATENTCELL_REQUIRE_PYTHON();
  test::TempDir dir;
  ASSERT_EQ(test::runPython("tests/python/heads_reference.py", "'" + dir.file("ref.safetensors") + "'"), 0);
  const auto ref = core::loadSafetensors(dir.file("ref.safetensors"));
  auto got = klToStandardNormal(ref.at("kl.mu"), ref.at("kl.logvar"));
  EXPECT_LE((got - ref.at("kl.torch")).abs().max().item<double>(), 1e-12);
}

TEST(Gaussian, SamplesInTrainingAndReturnsTheMeanInEvaluation) {
  torch::manual_seed(4);
  GaussianBottleneck g(GaussianBottleneckOptions{6, 3, 0.5, false});
  g.to(torch::kDouble);
  auto h = torch::randn({2000, 4, 6}, torch::kDouble);
  auto [mu, logvar] = g.moments(h);
  g.train();
  auto out = g.forward(h);
  auto noise = (out.z - mu) / torch::exp(0.5 * logvar);  // should be N(0, 1)
  EXPECT_NEAR(noise.mean().item<double>(), 0.0, 5.0 / std::sqrt(24000.0));
  EXPECT_NEAR(noise.std().item<double>(), 1.0, 0.03);
  EXPECT_TRUE(torch::equal(out.latent, mu));
  const double kl = klToStandardNormal(mu, logvar).mean().item<double>();
  EXPECT_NEAR(out.terms[0].second.item<double>(), kl, 1e-10);
  EXPECT_NEAR(out.loss.item<double>(), 0.5 * kl, 1e-10);
  g.eval();
  EXPECT_TRUE(torch::equal(g.forward(h).z, mu));
  EXPECT_TRUE(torch::equal(g.decodeInput(mu), mu));
  EXPECT_EQ(g.outputDim(), 3);
}

TEST(Gaussian, DeterministicModeIsMeanOnly) {
  torch::manual_seed(5);
  GaussianBottleneck g(GaussianBottleneckOptions{6, 0, 0.0, true});
  EXPECT_EQ(g.proj->weight.size(0), 6);  // no log-variance half
  auto h = torch::randn({3, 2, 6});
  g.train();
  auto a = g.forward(h), b = g.forward(h);
  EXPECT_TRUE(torch::equal(a.z, b.z));
  EXPECT_TRUE(a.terms.empty());
  EXPECT_EQ(a.loss.item<double>(), 0.0);
  EXPECT_NE(test::errorOf([] { GaussianBottleneck(GaussianBottleneckOptions{6, 0, 1e-5, true}); }).find("set beta to 0"),
            std::string::npos);
}

TEST(Identity, PassesTheEncoderOutputThrough) {
  IdentityBottleneck id(5);
  auto h = torch::randn({2, 3, 5});
  auto out = id.forward(h);
  EXPECT_TRUE(torch::equal(out.z, h));
  EXPECT_TRUE(torch::equal(out.latent, h));
  EXPECT_EQ(out.loss.item<double>(), 0.0);
  EXPECT_NE(test::errorOf([&] { id.forward(torch::randn({2, 3, 4})); }).find("[batch, tokens, 5]"), std::string::npos);
}

// ---------------------------------------------------------------- config and factory

TEST(BottleneckConfig, BuildsEveryKind) {
  auto fsq = makeBottleneck(bottleneckConfig("bottleneck: {kind: fsq, levels: [8, 5, 5, 5]}"), 16);
  EXPECT_EQ(fsq->codebookSize(), 1000);
  EXPECT_EQ(fsq->outputDim(), 16);
  auto gauss = makeBottleneck(bottleneckConfig("bottleneck: {kind: gaussian, latent_dim: 8, beta: 1e-5}"), 16);
  EXPECT_EQ(gauss->outputDim(), 8);
  EXPECT_EQ(dynamic_cast<GaussianBottleneck*>(gauss.get())->options().beta, 1e-5);
  auto det = makeBottleneck(bottleneckConfig("bottleneck: {kind: gaussian, deterministic: true, beta: 0}"), 16);
  EXPECT_TRUE(dynamic_cast<GaussianBottleneck*>(det.get())->options().deterministic);
  EXPECT_STREQ(makeBottleneck(bottleneckConfig("bottleneck: {kind: none}"), 16)->kind(), "none");
  auto dithered = makeBottleneck(bottleneckConfig("bottleneck: {kind: fsq, levels: [16, 16], dither: 0.5, bound_penalty: 0.05}"), 16);
  EXPECT_EQ(dynamic_cast<FsqBottleneck*>(dithered.get())->options().dither, 0.5);
  EXPECT_EQ(dynamic_cast<FsqBottleneck*>(dithered.get())->options().bound_penalty, 0.05);
}

TEST(BottleneckConfig, RejectsInvalidSettings) {
  auto error = [](const std::string& yaml) { return test::errorOf([&] { bottleneckConfig(yaml); }); };
  EXPECT_NE(error("bottleneck: {kind: fsq, levels: [8, 1]}").find("bottleneck.levels"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: fsq, levels: []}").find("bottleneck.levels"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: fsq, levels: [1024, 1024, 1024, 1024]}").find("2^31"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: gaussian, deterministic: true}").find("bottleneck.beta"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: fsq, deterministic: true}").find("bottleneck.deterministic"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: none, latent_dim: 4}").find("bottleneck.latent_dim"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: gaussian, beta: -1}").find("bottleneck.beta"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: vq}").find("bottleneck.kind"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: fsq, dither: 1.5}").find("bottleneck.dither"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: gaussian, dither: 0.5}").find("bottleneck.dither"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: fsq, bound_penalty: -0.1}").find("bottleneck.bound_penalty"), std::string::npos);
  EXPECT_NE(error("bottleneck: {kind: gaussian, bound_penalty: 0.1}").find("bottleneck.bound_penalty"), std::string::npos);
}
