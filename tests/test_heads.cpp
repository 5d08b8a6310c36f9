// Output heads (heads/): the NB log-likelihood against torch.distributions and scipy, NB samples
// against the NB moments, hurdle / ce-quant / MSE losses against values computed by hand in scalar
// arithmetic, ce-quant bins on the real screen against ExpressionVAE's layout, gradients against
// finite differences, the MMD term, the library-size model, and the head config with its errors.
#include "GradCheck.h"
#include "TestUtil.h"
#include "core/Autocast.h"
#include "core/Config.h"
#include "core/Random.h"
#include "core/Safetensors.h"
#include "core/StateDict.h"
#include "data/H5ad.h"
#include "eval/DistributionMetrics.h"
#include "heads/CeQuantHead.h"
#include "heads/HeadConfig.h"
#include "heads/HurdleHead.h"
#include "heads/Mmd.h"
#include "heads/MseHead.h"
#include "heads/NegativeBinomialHead.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <functional>

using namespace latentcell;
using namespace latentcell::heads;

namespace {

const std::string kScreen = "../shared/data/papalexi2021_thp1_eccite_299genes.h5ad";

torch::Tensor f64(std::initializer_list<double> v) { return torch::tensor(std::vector<double>(v), torch::kDouble); }

void setLinear(torch::nn::Linear& linear, const torch::Tensor& weight, const torch::Tensor& bias) {
  torch::NoGradGuard ng;
  linear->weight.copy_(weight);
  linear->bias.copy_(bias);
}

// 16 random entries of each tensor.
void expectGradientsMatch(const std::function<torch::Tensor()>& loss, const test::NamedTensors& wrt) {
  test::expectLossGradientsMatch(loss, wrt, 16);
}

NegativeBinomialOptions nbOptions(int64_t width, int64_t n_genes) {
  NegativeBinomialOptions o;
  o.width = width;
  o.n_genes = n_genes;
  return o;
}

std::shared_ptr<NegativeBinomialHead> doubleNb(const NegativeBinomialOptions& o) {
  auto head = std::make_shared<NegativeBinomialHead>(o);
  test::randomiseDouble(*head, 0.5);
  return head;
}

// Config root holding the two sections under test, as a stage-1 config would.
struct Root : core::ConfigSection {
  HeadConfig head;
  void visit(core::ConfigVisitor& v) override { v.section("head", head, "output head"); }
};

HeadConfig headConfig(const std::string& yaml) {
  Root root;
  core::loadConfigText(root, yaml, "test.yaml");
  return root.head;
}

// The torch.distributions and scipy values of tests/python/heads_reference.py.
core::SafetensorsData headsReference() {
  test::TempDir dir;
  const std::string file = dir.file("ref.safetensors");
  if (test::runPython("tests/python/heads_reference.py", "'" + file + "'") != 0)
    throw std::runtime_error("tests/python/heads_reference.py failed (its output is above)");
  return core::loadSafetensors(file);
}

}  // namespace

// ---------------------------------------------------------------- negative binomial

TEST(NegativeBinomial, LogProbMatchesTorchAndScipy) {
  LATENTCELL_REQUIRE_PYTHON();
  const auto ref = headsReference();
  auto got = negativeBinomialLogProb(ref.at("nb.x"), ref.at("nb.mu"), ref.at("nb.theta"));
  ASSERT_EQ(got.scalar_type(), torch::kDouble);
  EXPECT_LE((got - ref.at("nb.torch")).abs().max().item<double>(), 1e-6);
  EXPECT_LE((got - ref.at("nb.scipy")).abs().max().item<double>(), 1e-6);
  // The grid spans log-probabilities from about -0.1 to below -90, so the check is not vacuous.
  EXPECT_LT(ref.at("nb.torch").min().item<double>(), -90.0);
}

TEST(NegativeBinomial, ExpectedLog1pMatchesScipy) {
  LATENTCELL_REQUIRE_PYTHON();
  const auto ref = headsReference();
  auto got = negativeBinomialExpectedLog1p(ref.at("nbl.mu"), ref.at("nbl.theta"), ref.at("nbl.scale"));
  ASSERT_EQ(got.scalar_type(), torch::kDouble);
  EXPECT_LE((got - ref.at("nbl.scipy")).abs().max().item<double>(), 1e-8);
  // Not vacuous: the values span 0 to about 10, and log1p of the mean differs from them by far more.
  EXPECT_GT(ref.at("nbl.scipy").max().item<double>(), 9.0);
  auto jensen = torch::log1p(ref.at("nbl.mu") * ref.at("nbl.scale"));
  EXPECT_GT((jensen - ref.at("nbl.scipy")).abs().max().item<double>(), 1.0);
}

TEST(NegativeBinomial, PredictLog1pMeanUsesTheObservedLibrary) {
  torch::manual_seed(4);
  auto head = doubleNb(nbOptions(4, 6));
  auto h = torch::randn({3, 6, 4}, torch::kDouble);
  HeadContext ctx{torch::arange(1, 7, torch::kLong), f64({500.0, 40.0, 0.0}), {}};
  auto p = head->distribution(h, ctx, false);
  auto got = head->predict(h, ctx, PredictMode::Log1pMean);
  auto scale = f64({1e4 / 500.0, 1e4 / 40.0, 0.0}).unsqueeze(1);
  EXPECT_TRUE(torch::allclose(got, negativeBinomialExpectedLog1p(p.mu, p.theta, scale), 0, 1e-12));
  EXPECT_TRUE(torch::equal(got[2], torch::zeros({6}, torch::kDouble)));  // an empty cell stays zero
  // Jensen: below log1p of the mean, everywhere the distribution is not a point.
  EXPECT_TRUE((got.slice(0, 0, 2) < torch::log1p(p.mu * scale).slice(0, 0, 2)).all().item<bool>());
  EXPECT_EQ(head->predictionSpace(PredictMode::Log1pMean), ValueSpace::LogNormalized);
  EXPECT_EQ(head->predictionSpace(PredictMode::Mean), ValueSpace::Counts);
  HeadContext no_library{ctx.gene_ids, {}, {}};
  EXPECT_THROW(head->predict(h, no_library, PredictMode::Log1pMean), std::invalid_argument);
}

TEST(NegativeBinomial, ObservedLibraryMeanIsLibraryTimesSoftmax) {
  torch::manual_seed(1);
  auto head = doubleNb(nbOptions(4, 10));
  auto h = torch::randn({3, 5, 4}, torch::kDouble);
  auto counts = torch::randint(0, 30, {3, 5}, torch::kDouble);
  auto ids = torch::tensor({2, 7, 1, 10, 4}, torch::kLong);
  HeadContext ctx{ids, f64({120.0, 35.0, 800.0}), {}};
  auto p = head->distribution(h, ctx, false);

  auto logits = torch::matmul(h, head->scale->weight.reshape({4})) + head->scale->bias;  // [3, 5]
  auto mu = ctx.library.unsqueeze(1) * torch::softmax(logits, 1);
  auto theta = torch::exp(head->log_theta.index_select(0, ids - 1)).expand({3, 5});
  EXPECT_TRUE(torch::allclose(p.mu, mu, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(p.mu.sum(1), ctx.library, 1e-12, 1e-10));  // depth is the library size
  EXPECT_TRUE(torch::allclose(p.theta, theta, 0, 0));

  auto ll = head->logLikelihood(h, counts, ctx);
  EXPECT_TRUE(torch::allclose(ll, negativeBinomialLogProb(counts, mu, theta), 1e-12, 1e-12));
  auto loss = head->loss(h, counts, ctx);
  EXPECT_NEAR(loss.total.item<double>(), -ll.sum(1).mean().item<double>(), 1e-10);
  ASSERT_EQ(loss.terms.size(), 1u);
  EXPECT_EQ(loss.terms[0].first, "nb_nll");

  // Per-cell gene ids give the same result as shared ones.
  HeadContext per_cell{ids.unsqueeze(0).expand({3, 5}).contiguous(), ctx.library, {}};
  EXPECT_TRUE(torch::allclose(head->logLikelihood(h, counts, per_cell), ll, 0, 0));
  EXPECT_TRUE(torch::allclose(head->predict(h, ctx, PredictMode::Mean), mu, 1e-12, 1e-12));
}

TEST(NegativeBinomial, NoLibraryAndPerCellDispersion) {
  torch::manual_seed(2);
  auto o = nbOptions(3, 0);
  o.dispersion = Dispersion::Cell;
  o.library = LibraryMode::None;
  auto head = doubleNb(o);
  auto h = torch::randn({2, 4, 3}, torch::kDouble);
  auto p = head->distribution(h, {}, false);  // needs neither gene ids nor a library
  auto logits = torch::matmul(h, head->scale->weight.reshape({3})) + head->scale->bias;
  auto log_theta = torch::matmul(h, head->dispersion->weight.reshape({3})) + head->dispersion->bias;
  EXPECT_TRUE(torch::allclose(p.mu, torch::exp(logits), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(p.theta, torch::exp(log_theta), 1e-12, 1e-12));
  EXPECT_TRUE(head->log_theta.defined() == false);
}

TEST(NegativeBinomial, SamplesReproduceMeanAndVariance) {
  const int64_t n = 100000;
  const std::pair<double, double> cases[] = {{0.5, 0.3}, {5.0, 2.0}, {40.0, 10.0}, {200.0, 0.5}};
  auto gen = core::makeGenerator(11);
  for (auto [mu, theta] : cases) {
    SCOPED_TRACE(fmt::format("mu {} theta {}", mu, theta));
    auto x = sampleNegativeBinomial(torch::full({n}, mu, torch::kDouble), torch::full({n}, theta, torch::kDouble), gen);
    ASSERT_TRUE(torch::equal(x, x.round()));  // counts
    ASSERT_GE(x.min().item<double>(), 0.0);
    const double var_true = mu + mu * mu / theta;
    const double mean = x.mean().item<double>();
    const double var = x.var(/*unbiased=*/true).item<double>();
    const double m4 = (x - mean).pow(4).mean().item<double>();
    const double se_mean = std::sqrt(var_true / n), se_var = std::sqrt((m4 - var * var) / n);
    EXPECT_NEAR(mean, mu, 5 * se_mean);
    EXPECT_NEAR(var, var_true, 5 * se_var);
  }
}

TEST(NegativeBinomial, PredictSampleIsSeededAndMeanIsMu) {
  torch::manual_seed(3);
  auto head = doubleNb(nbOptions(4, 6));
  auto h = torch::randn({8, 6, 4}, torch::kDouble);
  HeadContext ctx{torch::arange(1, 7, torch::kLong), torch::full({8}, 500.0, torch::kDouble), {}};
  auto a = head->predict(h, ctx, PredictMode::Sample, core::makeGenerator(5));
  auto b = head->predict(h, ctx, PredictMode::Sample, core::makeGenerator(5));
  auto c = head->predict(h, ctx, PredictMode::Sample, core::makeGenerator(6));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  EXPECT_TRUE(torch::equal(a, a.round()));
  EXPECT_FALSE(head->predict(h, ctx, PredictMode::Mean).equal(head->predict(h, ctx, PredictMode::Mean).round()));
}

TEST(NegativeBinomial, GradientsMatchFiniteDifferences) {
  torch::manual_seed(4);
  for (auto dispersion : {Dispersion::Gene, Dispersion::Cell}) {
    auto o = nbOptions(3, 5);
    o.dispersion = dispersion;
    auto head = doubleNb(o);
    auto h = torch::randn({2, 5, 3}, torch::kDouble).requires_grad_(true);
    auto counts = torch::randint(0, 12, {2, 5}, torch::kDouble);
    HeadContext ctx{torch::arange(1, 6, torch::kLong), f64({40.0, 15.0}), {}};
    test::NamedTensors wrt{{"h", h}, {"scale.weight", head->scale->weight}};
    if (dispersion == Dispersion::Gene)
      wrt.emplace_back("log_theta", head->log_theta);
    else
      wrt.emplace_back("dispersion.weight", head->dispersion->weight);
    expectGradientsMatch([&] { return head->loss(h, counts, ctx).total; }, wrt);
  }
}

TEST(NegativeBinomial, ModeledLibraryFitsPriorAndAddsKl) {
  torch::manual_seed(5);
  auto o = nbOptions(3, 4);
  o.library = LibraryMode::Modeled;
  o.cell_dim = 2;
  o.library_kl_weight = 0.5;
  auto head = doubleNb(o);
  auto h = torch::randn({3, 4, 3}, torch::kDouble);
  auto counts = torch::randint(0, 9, {3, 4}, torch::kDouble);
  HeadContext ctx{torch::arange(1, 5, torch::kLong), {}, torch::randn({3, 2}, torch::kDouble)};

  head->library_model->prior.zero_();
  EXPECT_NE(test::errorOf([&] { head->loss(h, counts, ctx); }).find("not fitted"), std::string::npos);

  // Prior: mean and variance of log library over the cells with counts (the empty cell is left out).
  auto train = test::csrFromDense({{1, 3, 0}, {0, 0, 0}, {10, 0, 6}, {2, 2, 0}});
  EXPECT_NE(test::errorOf([&] { head->fitToData(test::csrFromDense({{1.5f, 0, 0}})); }).find("raw UMI counts"),
            std::string::npos);
  head->fitToData(train);
  const double l1 = std::log(4.0), l2 = std::log(16.0), l3 = std::log(4.0);
  const double m = (l1 + l2 + l3) / 3, v = ((l1 - m) * (l1 - m) + (l2 - m) * (l2 - m) + (l3 - m) * (l3 - m)) / 3;
  EXPECT_NEAR(head->library_model->prior[0].item<double>(), m, 1e-12);
  EXPECT_NEAR(head->library_model->prior[1].item<double>(), v, 1e-12);

  // Evaluation: log l is the posterior mean, the KL has the closed form of two normals.
  head->eval();
  auto stats = head->library_model->posterior(ctx.cell_features);
  auto post_mean = m + stats.select(1, 0), post_logvar = std::log(v) + stats.select(1, 1);
  auto kl = 0.5 * (std::log(v) - post_logvar + (post_logvar.exp() + (post_mean - m).square()) / v - 1.0);
  auto p = head->distribution(h, ctx, false);
  EXPECT_TRUE(torch::allclose(p.mu.sum(1), post_mean.exp(), 1e-12, 1e-10));
  EXPECT_TRUE(torch::allclose(p.library_kl, kl, 1e-12, 1e-12));
  auto loss = head->loss(h, counts, ctx);
  ASSERT_EQ(loss.terms.size(), 2u);
  EXPECT_EQ(loss.terms[1].first, "library_kl");
  const double nll = -negativeBinomialLogProb(counts, p.mu, p.theta).sum(1).mean().item<double>();
  EXPECT_NEAR(loss.total.item<double>(), nll + 0.5 * kl.mean().item<double>(), 1e-10);

  // The prior is a buffer: it travels with the state dict.
  auto fresh = doubleNb(o);
  core::loadStateDict(*fresh, core::stateDict(*head));
  EXPECT_TRUE(torch::equal(fresh->library_model->prior, head->library_model->prior));

  // Training draws the library size: two calls differ.
  head->train();
  EXPECT_FALSE(torch::equal(head->distribution(h, ctx, true).mu, head->distribution(h, ctx, true).mu));
}

TEST(NegativeBinomial, MissingInputsAreClearErrors) {
  auto head = doubleNb(nbOptions(3, 4));
  auto h = torch::randn({2, 4, 3}, torch::kDouble);
  auto counts = torch::zeros({2, 4}, torch::kDouble);
  EXPECT_NE(test::errorOf([&] { head->loss(h, counts, {torch::arange(1, 5), {}, {}}); }).find("library size"),
            std::string::npos);
  EXPECT_NE(test::errorOf([&] { head->loss(h, counts, {{}, f64({1, 2}), {}}); }).find("gene_ids is missing"),
            std::string::npos);
  EXPECT_NE(test::errorOf([&] { head->loss(h, counts, {torch::tensor({1, 2, 3, 5}), f64({1, 2}), {}}); })
                .find("must lie in 1..4"),
            std::string::npos);
  EXPECT_NE(test::errorOf([&] { head->loss(h, torch::zeros({2, 3}), {torch::arange(1, 5), f64({1, 2}), {}}); })
                .find("do not match"),
            std::string::npos);
}

// ---------------------------------------------------------------- hurdle

TEST(Hurdle, LossEqualsHandComputedValue) {
  HurdleHead head(2);
  head.to(torch::kDouble);
  setLinear(head.proj, f64({1, 0, 0, 1}).view({2, 2}), f64({0.5, -0.2}));  // gate = h0 + 0.5, magnitude = h1 - 0.2
  const double hv[2][3][2] = {{{0.3, 1.0}, {-1.2, 5.1}, {2.0, 6.0}}, {{-0.4, 4.8}, {0.1, 0.0}, {-2.5, 3.0}}};
  const double cv[2][3] = {{0, 2, 5}, {1, 0, 0}};
  const double lib[2] = {100, 50};
  auto h = torch::empty({2, 3, 2}, torch::kDouble);
  auto counts = torch::empty({2, 3}, torch::kDouble);
  for (int b = 0; b < 2; ++b)
    for (int g = 0; g < 3; ++g) {
      h[b][g][0] = hv[b][g][0];
      h[b][g][1] = hv[b][g][1];
      counts[b][g] = cv[b][g];
    }
  double bce = 0, mse = 0, ll = 0;
  for (int b = 0; b < 2; ++b)
    for (int g = 0; g < 3; ++g) {
      const double gate = hv[b][g][0] + 0.5, mag = hv[b][g][1] - 0.2;
      const double t = cv[b][g] > 0 ? 1.0 : 0.0;
      const double y = std::log(1.0 + cv[b][g] / lib[b] * 1e4);
      bce += std::log(1.0 + std::exp(gate)) - t * gate;
      mse += t * (mag - y) * (mag - y);
      const double p = 1.0 / (1.0 + std::exp(-gate));
      ll += t > 0 ? std::log(p) - 0.5 * (mag - y) * (mag - y) - 0.5 * std::log(2 * M_PI) : std::log(1 - p);
    }
  HeadContext ctx{{}, f64({lib[0], lib[1]}), {}};
  auto loss = head.loss(h, counts, ctx);
  EXPECT_NEAR(loss.total.item<double>(), (bce + mse) / 2, 1e-12);
  ASSERT_EQ(loss.terms.size(), 2u);
  EXPECT_NEAR(loss.terms[0].second.item<double>(), bce / 2, 1e-12);
  EXPECT_NEAR(loss.terms[1].second.item<double>(), mse / 2, 1e-12);
  EXPECT_NEAR(head.logLikelihood(h, counts, ctx).sum().item<double>(), ll, 1e-12);
  EXPECT_GT(mse, 0.5);  // the magnitudes are off, so the squared-error part matters
}

TEST(Hurdle, PredictSamplesTheGateAndEmitsTheMagnitude) {
  torch::manual_seed(6);
  HurdleHead head(2);
  head.to(torch::kDouble);
  setLinear(head.proj, f64({1, 0, 0, 1}).view({2, 2}), f64({0, 0}));
  const int64_t n = 20000;
  auto h = torch::stack({torch::full({n}, std::log(0.3 / 0.7), torch::kDouble), torch::full({n}, 2.5, torch::kDouble)}, 1)
               .view({1, n, 2});
  auto sample = head.predict(h, {}, PredictMode::Sample, core::makeGenerator(1));
  auto nonzero = sample.ne(0);
  EXPECT_TRUE(torch::allclose(sample.masked_select(nonzero), torch::full({1}, 2.5, torch::kDouble)));
  const double rate = nonzero.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(rate, 0.3, 5 * std::sqrt(0.3 * 0.7 / n));
  EXPECT_TRUE(torch::allclose(head.predict(h, {}, PredictMode::Mean), torch::full({1, n}, 0.75, torch::kDouble)));
  // Its mean is already in log1p space.
  EXPECT_TRUE(torch::equal(head.predict(h, {}, PredictMode::Log1pMean), head.predict(h, {}, PredictMode::Mean)));
}

TEST(Hurdle, GradientsMatchFiniteDifferences) {
  torch::manual_seed(7);
  HurdleHead head(3);
  head.to(torch::kDouble);
  auto h = torch::randn({3, 4, 3}, torch::kDouble).requires_grad_(true);
  auto counts = torch::tensor({0., 3., 0., 7., 1., 0., 0., 2., 5., 0., 9., 0.}, torch::kDouble).view({3, 4});
  HeadContext ctx{{}, f64({30.0, 12.0, 70.0}), {}};
  expectGradientsMatch([&] { return head.loss(h, counts, ctx).total; }, {{"h", h}, {"proj.weight", head.proj->weight}, {"proj.bias", head.proj->bias}});
}

// ---------------------------------------------------------------- ce-quant

TEST(CeQuant, BinsAndLossOnASmallCase) {
  CeQuantOptions o;
  o.width = 5;
  o.singleton_bins = 2;
  o.quantile_bins = 2;
  o.tail_edges = {10};
  CeQuantHead head(o);
  head.to(torch::kDouble);
  // Counts in [2, 10): 2, 3, 4, 9 -> the value at sorted position floor(4 / 2) = 2 is 4.
  head.fitToData(test::csrFromDense({{0, 2, 3}, {4, 9, 12}, {1, 0, 20}}));
  EXPECT_TRUE(torch::equal(head.bin_edges, f64({0, 1, 2, 4, 10})));
  EXPECT_TRUE(torch::allclose(head.bin_means, f64({0, 1, 2.5, 6.5, 16})));
  EXPECT_TRUE(torch::equal(head.binOf(f64({0, 1, 2, 3, 4, 9, 10, 278})), torch::tensor({0, 1, 2, 2, 3, 3, 4, 4}, torch::kLong)));

  // Logits = H (identity projection); loss = sum over genes of logsumexp - logit of the count's bin.
  setLinear(head.proj, torch::eye(5, torch::kDouble), torch::zeros({5}, torch::kDouble));
  const double hv[3][5] = {{0.2, -1.0, 0.5, 1.5, -0.3}, {1.1, 0.0, -0.7, 0.4, 2.0}, {-0.5, 0.9, 0.3, -1.2, 0.8}};
  const int bins[3] = {0, 2, 4};  // counts 0, 3, 15
  auto h = torch::empty({1, 3, 5}, torch::kDouble);
  double ce = 0, expected = 0;
  const double means[5] = {0, 1, 2.5, 6.5, 16};
  for (int g = 0; g < 3; ++g) {
    double z = 0;
    for (int k = 0; k < 5; ++k) {
      h[0][g][k] = hv[g][k];
      z += std::exp(hv[g][k]);
    }
    ce += std::log(z) - hv[g][bins[g]];
    for (int k = 0; k < 5; ++k) expected += g == 1 ? std::exp(hv[g][k]) / z * means[k] : 0.0;
  }
  auto loss = head.loss(h, f64({0, 3, 15}).view({1, 3}), {});
  EXPECT_NEAR(loss.total.item<double>(), ce, 1e-12);
  EXPECT_EQ(loss.terms[0].first, "ce_quant_ce");
  EXPECT_NEAR(head.predict(h, {}, PredictMode::Mean)[0][1].item<double>(), expected, 1e-12);
  // log1p_mean: bin probabilities times log1p(bin mean * 1e4 / library), library 250.
  double expected_log1p = 0;
  for (int k = 0; k < 5; ++k) {
    double z = 0;
    for (int j = 0; j < 5; ++j) z += std::exp(hv[1][j]);
    expected_log1p += std::exp(hv[1][k]) / z * std::log1p(means[k] * 1e4 / 250.0);
  }
  HeadContext ctx{{}, f64({250.0}), {}};
  EXPECT_NEAR(head.predict(h, ctx, PredictMode::Log1pMean)[0][1].item<double>(), expected_log1p, 1e-12);
  EXPECT_THROW(head.predict(h, {}, PredictMode::Log1pMean), std::invalid_argument);  // needs the library

  // Sampling emits bin means only.
  auto drawn = head.predict(h.expand({200, 3, 5}), {}, PredictMode::Sample, core::makeGenerator(3));
  EXPECT_TRUE(torch::isin(drawn, head.bin_means).all().item<bool>());
}

TEST(CeQuant, EmptyBinsFallBackToMidpointsAndLowerEdge) {
  CeQuantOptions o;
  o.width = 2;
  o.singleton_bins = 2;
  o.quantile_bins = 2;
  o.tail_edges = {10};
  CeQuantHead head(o);
  head.fitToData(test::csrFromDense({{0, 1}, {1, 0}}));
  // No count in [2, 10): evenly spaced quantile edges; empty bins get midpoints, the unbounded one its edge.
  EXPECT_TRUE(torch::equal(head.bin_edges, torch::tensor({0.f, 1.f, 2.f, 6.f, 10.f})));
  EXPECT_TRUE(torch::allclose(head.bin_means, torch::tensor({0.f, 1.f, 3.5f, 7.5f, 10.f})));
}

TEST(CeQuant, BinsAreStateSavedWithTheModel) {
  CeQuantOptions o;
  o.width = 3;
  CeQuantHead head(o);
  auto h = torch::randn({1, 2, 3});
  EXPECT_NE(test::errorOf([&] { head.loss(h, torch::zeros({1, 2}), {}); }).find("not fitted"), std::string::npos);
  head.fitToData(test::csrFromDense({{0, 1, 5, 8, 9, 12, 20, 33, 70, 100, 300}}));
  EXPECT_EQ(head.bin_edges.numel(), 20);

  auto state = core::stateDict(head);
  bool edges = false, means = false;
  for (const auto& [name, t] : state) {
    edges |= name == "bin_edges";
    means |= name == "bin_means";
  }
  EXPECT_TRUE(edges && means);
  test::TempDir dir;
  core::saveSafetensors(dir.file("head.safetensors"), state);
  CeQuantHead restored(o);
  core::loadStateDict(restored, core::loadSafetensors(dir.file("head.safetensors")).tensors);
  EXPECT_TRUE(torch::equal(restored.bin_edges, head.bin_edges));
  EXPECT_TRUE(torch::equal(restored.bin_means, head.bin_means));
  EXPECT_NO_THROW(restored.loss(h, torch::ones({1, 2}), {}));  // fitted state came with the weights
}

TEST(CeQuant, RejectsNonCountData) {
  CeQuantOptions o;
  o.width = 3;
  CeQuantHead head(o);
  const auto msg = test::errorOf([&] { head.fitToData(test::csrFromDense({{0, 1}, {0.69f, 2}})); });
  EXPECT_NE(msg.find("cell 1, gene 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("raw UMI counts"), std::string::npos) << msg;
}

TEST(CeQuant, BinsOnTheRealScreenFollowExpressionVaeLayout) {
  const std::string path = test::sourcePath(kScreen);
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "../shared/data has no Papalexi screen";
  data::H5adReadOptions ro;
  ro.obsm = false;
  const auto adata = data::readH5ad(path, ro);
  CeQuantOptions o;
  o.width = 4;
  CeQuantHead head(o);
  head.fitToData(adata.X);
  auto edges = head.bin_edges.to(torch::kDouble), means = head.bin_means.to(torch::kDouble);
  ASSERT_EQ(edges.numel(), 20);
  // 8 singletons 0..7 (bin 0 = zero), each detokenised to its own value.
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(edges[k].item<double>(), k);
    EXPECT_DOUBLE_EQ(means[k].item<double>(), k);
  }
  // 7 quantile bins over 8..63, at progressively coarser resolution.
  EXPECT_EQ(edges[8].item<double>(), 8);
  int64_t prev_width = 0;
  for (int k = 8; k < 15; ++k) {
    const int64_t width = static_cast<int64_t>(edges[k + 1].item<double>() - edges[k].item<double>());
    EXPECT_GE(width, prev_width) << "bin " << k;
    prev_width = width;
  }
  EXPECT_GT(edges[14].item<double>() - edges[8].item<double>(), 6) << "quantile edges collapsed onto singletons";
  // 5 fixed tail bins.
  for (int k = 0; k < 5; ++k) EXPECT_EQ(edges[15 + k].item<double>(), (std::vector<double>{64, 96, 128, 192, 256})[k]);
  // Every bin's empirical mean lies inside the bin (the screen has counts up to 278, so all are filled).
  for (int k = 0; k < 20; ++k) {
    EXPECT_GE(means[k].item<double>(), edges[k].item<double>()) << "bin " << k;
    if (k < 19) {
      EXPECT_LT(means[k].item<double>(), edges[k + 1].item<double>()) << "bin " << k;
    }
  }
  // Quantile bins hold comparable numbers of training counts (equal mass up to ties at one value).
  auto values = torch::from_blob(const_cast<float*>(adata.X.data.data()), {adata.X.nnz()}, torch::kFloat).to(torch::kDouble);
  auto bins = head.binOf(values);
  auto per_bin = torch::bincount(bins, {}, 20).to(torch::kDouble);
  auto quantile_mass = per_bin.slice(0, 10, 15);  // bins 8 and 9 are single values with ties
  EXPECT_LT((quantile_mass.max() / quantile_mass.min()).item<double>(), 2.5) << per_bin;
}

// ---------------------------------------------------------------- MSE

TEST(Mse, LossEqualsHandComputedValue) {
  MseHead head(1, 1e4);
  head.to(torch::kDouble);
  setLinear(head.proj, f64({2.0}).view({1, 1}), f64({-1.0}));  // mu = 2 h - 1
  const double hv[2][2] = {{1.0, 3.0}, {0.5, 2.5}};
  const double cv[2][2] = {{3, 0}, {1, 4}};
  const double lib[2] = {200, 40};
  double sse = 0;
  for (int b = 0; b < 2; ++b)
    for (int g = 0; g < 2; ++g) {
      const double d = 2 * hv[b][g] - 1 - std::log(1 + cv[b][g] / lib[b] * 1e4);
      sse += d * d;
    }
  auto h = f64({1.0, 3.0, 0.5, 2.5}).view({2, 2, 1});
  auto counts = f64({3, 0, 1, 4}).view({2, 2});
  HeadContext ctx{{}, f64({lib[0], lib[1]}), {}};
  EXPECT_NEAR(head.loss(h, counts, ctx).total.item<double>(), sse / 2, 1e-12);
  EXPECT_TRUE(torch::equal(head.predict(h, ctx, PredictMode::Sample), head.predict(h, ctx, PredictMode::Mean)));
  EXPECT_TRUE(torch::equal(head.predict(h, ctx, PredictMode::Log1pMean), head.predict(h, ctx, PredictMode::Mean)));
  EXPECT_NEAR(head.logLikelihood(h, counts, ctx).sum().item<double>(), -0.5 * sse - 2 * std::log(2 * M_PI), 1e-12);
}

// ---------------------------------------------------------------- MMD

TEST(Mmd, EqualsHandComputedValueAndTheEvaluator) {
  // One dimension, one bandwidth: x = {0, 1}, y = {2}.
  auto x = f64({0, 1}).view({2, 1}), y = f64({2}).view({1, 1});
  auto k = [](double d) { return std::exp(-d * d / 2.0); };
  const double want = (2 * k(0) + 2 * k(1)) / 4 + k(0) - 2 * (k(2) + k(1)) / 2;
  EXPECT_NEAR(mmdRbf(x, y, {1.0}).item<double>(), want, 1e-14);

  torch::manual_seed(8);
  auto a = torch::randn({16, 7}, torch::kDouble), b = torch::randn({16, 7}, torch::kDouble) + 0.5;
  EXPECT_NEAR(mmdRbf(a, b, eval::kMmdSigmas).item<double>(), eval::mmdRbfBiased(a, b), 1e-12);
  EXPECT_NEAR(mmdRbf(a, a, eval::kMmdSigmas).item<double>(), 0.0, 1e-12);
  EXPECT_NE(test::errorOf([&] { mmdRbf(a, b, {0.0}); }).find("positive"), std::string::npos);
}

TEST(Mmd, GradientsMatchFiniteDifferences) {
  torch::manual_seed(9);
  auto a = torch::randn({5, 3}, torch::kDouble).requires_grad_(true);
  auto b = torch::randn({4, 3}, torch::kDouble).requires_grad_(true);
  expectGradientsMatch([&] { return mmdRbf(a, b, {0.5, 2.0}); }, {{"a", a}, {"b", b}});
}

TEST(Mmd, TermJoinsAnyHeadsLoss) {
  torch::manual_seed(10);
  auto h = torch::randn({6, 5, 3}, torch::kDouble);
  auto counts = torch::randint(0, 20, {6, 5}, torch::kDouble);
  HeadContext ctx{torch::arange(1, 6, torch::kLong), counts.sum(1) + 10.0, {}};
  for (const std::string kind : {"nb", "hurdle", "mse"}) {
    SCOPED_TRACE(kind);
    HeadConfig c;
    c.kind = kind;
    c.mmd.weight = 0.25;
    auto head = makeHead(c, HeadDims{3, 5, 0});
    head->to(torch::kDouble);
    auto loss = head->loss(h, counts, ctx);
    ASSERT_EQ(loss.terms.back().first, "mmd");
    auto recon = head->predict(h, ctx, PredictMode::Mean);
    if (head->valueSpace() == ValueSpace::Counts) recon = logNormalize(recon, ctx.library, 1e4);
    const double mmd = mmdRbf(recon, logNormalize(counts, ctx.library, 1e4), c.mmd.sigmas).item<double>();
    EXPECT_NEAR(loss.terms.back().second.item<double>(), mmd, 1e-12);
    double rest = 0;
    for (size_t i = 0; i + 1 < loss.terms.size(); ++i) rest += loss.terms[i].second.item<double>();
    EXPECT_NEAR(loss.total.item<double>(), rest + 0.25 * mmd, 1e-10);
    // The term reaches the decoder output.
    auto hg = h.clone().requires_grad_(true);
    head->loss(hg, counts, ctx).terms.back().second.backward();
    EXPECT_GT(hg.grad().abs().sum().item<double>(), 0.0);
  }
}

// ---------------------------------------------------------------- all heads

TEST(Heads, DistributionMathRunsInFloat32UnderAutocast) {
  torch::manual_seed(11);
  auto h = torch::randn({4, 6, 8});
  auto counts = torch::randint(0, 15, {4, 6}).to(torch::kFloat);
  HeadContext ctx{torch::arange(1, 7, torch::kLong), counts.sum(1) + 5.0f, torch::randn({4, 3})};
  auto train = test::csrFromDense({{0, 1, 3, 9, 20, 70}, {2, 0, 0, 5, 130, 300}});
  for (const std::string yaml : {"head: {kind: nb}", "head: {kind: nb, dispersion: cell, library: modeled}",
                                 "head: {kind: hurdle}", "head: {kind: ce_quant}", "head: {kind: mse}"}) {
    SCOPED_TRACE(yaml);
    auto head = makeHead(headConfig(yaml), HeadDims{8, 6, 3});
    head->fitToData(train);
    head->eval();
    const double full = head->loss(h, counts, ctx).total.item<double>();
    core::AutocastGuard autocast(torch::kCPU, true, torch::kBFloat16);
    auto mixed = head->loss(h, counts, ctx).total;
    EXPECT_EQ(mixed.scalar_type(), torch::kFloat);
    EXPECT_NEAR(mixed.item<double>(), full, 0.02 * std::abs(full) + 0.05);  // bf16 projections only
  }
}

// ---------------------------------------------------------------- config and factory

TEST(HeadConfig, BuildsEveryKind) {
  auto nb = makeHead(headConfig("head: {kind: nb, dispersion: cell, library: none}"), HeadDims{8, 0, 0});
  auto* as_nb = dynamic_cast<NegativeBinomialHead*>(nb.get());
  ASSERT_NE(as_nb, nullptr);
  EXPECT_EQ(as_nb->options().dispersion, Dispersion::Cell);
  EXPECT_EQ(as_nb->options().library, LibraryMode::None);
  EXPECT_TRUE(nb->needsIntegerCounts());
  auto modeled = makeHead(headConfig("head: {kind: nb, library: modeled, library_kl_weight: 0.1}"), HeadDims{8, 30, 4});
  EXPECT_NE(dynamic_cast<NegativeBinomialHead*>(modeled.get())->library_model, nullptr);
  EXPECT_STREQ(makeHead(headConfig("head: {kind: hurdle}"), HeadDims{8, 30, 0})->kind(), "hurdle");
  auto ce = makeHead(headConfig("head: {kind: ce_quant, quantile_bins: 3, tail_edges: [20, 100]}"), HeadDims{8, 30, 0});
  EXPECT_EQ(dynamic_cast<CeQuantHead*>(ce.get())->bin_edges.numel(), 8 + 3 + 2);
  auto mse = makeHead(headConfig("head: {kind: mse, target_sum: 1000000}"), HeadDims{8, 30, 0});
  EXPECT_EQ(mse->valueSpace(), ValueSpace::LogNormalized);
  EXPECT_EQ(mse->targetSum(), 1e6);
  EXPECT_EQ(headConfig("head: {kind: ce_quant}").resolvedLibrary(), "none");
  EXPECT_EQ(headConfig("head: {kind: nb}").resolvedLibrary(), "observed");
}

TEST(HeadConfig, RejectsWhatAKindCannotHonour) {
  auto error = [](const std::string& yaml) { return test::errorOf([&] { headConfig(yaml); }); };
  EXPECT_NE(error("head: {kind: mse, dispersion: cell}").find("head.dispersion"), std::string::npos);
  EXPECT_NE(error("head: {kind: hurdle, library: modeled}").find("head.library"), std::string::npos);
  EXPECT_NE(error("head: {kind: ce_quant, library: observed}").find("head.library"), std::string::npos);
  EXPECT_NE(error("head: {kind: ce_quant, quantile_bins: 60}").find("no room"), std::string::npos);
  EXPECT_NE(error("head: {kind: ce_quant, tail_edges: [64, 32]}").find("increase strictly"), std::string::npos);
  EXPECT_NE(error("head: {kind: nb, mmd: {weight: -1}}").find("head.mmd.weight"), std::string::npos);
  EXPECT_NE(error("head: {kind: zinb}").find("head.kind"), std::string::npos);
  EXPECT_NE(error("head: {kind: nb, dispersoin: gene}").find("dispersoin"), std::string::npos);
  // A modeled library needs per-cell features to predict it from.
  EXPECT_NE(test::errorOf([] { makeHead(headConfig("head: {library: modeled}"), HeadDims{8, 30, 0}); })
                .find("feature width must be positive"),
            std::string::npos);
}

TEST(HeadConfig, IntegerCountCheckNamesTheValue) {
  const auto msg = test::errorOf([] { checkIntegerCounts(test::csrFromDense({{1, 2.5f}}), "train.h5ad", "nb"); });
  EXPECT_NE(msg.find("train.h5ad: value 2.5 at cell 0, gene 1"), std::string::npos) << msg;
  EXPECT_NO_THROW(checkIntegerCounts(test::csrFromDense({{1, 0, 278}}), "train.h5ad", "nb"));
  EXPECT_EQ(parsePredictMode("sample"), PredictMode::Sample);
  EXPECT_EQ(parsePredictMode("log1p_mean"), PredictMode::Log1pMean);
  EXPECT_NE(test::errorOf([] { parsePredictMode("median"); }).find("sample, mean, log1p_mean"), std::string::npos);
}
