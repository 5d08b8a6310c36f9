// Stage-2 priors: the DiT backbone and condition encoder, the four prior families, the ODE
// solvers, configs and the latent-kind checks. Properties, not snapshots: causality of the AR
// prior, KV-cached sampling equal to uncached sampling, MDLM's 1/t weighting against a hand
// computation, flow matching learning a 2-D Gaussian mixture, guidance algebra, JiT conversions.
// Networks whose adaLN-Zero init would make a property vacuous (zero outputs) are randomised first.
#include "TestUtil.h"
#include "core/Config.h"
#include "core/Random.h"
#include "data/ConditionEmbeddings.h"
#include "data/Conditions.h"
#include "eval/DistributionMetrics.h"
#include "priors/ArPrior.h"
#include "priors/ConditionEncoder.h"
#include "priors/DitBackbone.h"
#include "priors/FlowMatchingPrior.h"
#include "priors/JitTransportPrior.h"
#include "priors/MdlmPrior.h"
#include "priors/OdeSolver.h"
#include "priors/PriorFactory.h"
#include "priors/Sampling.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <limits>

using namespace latentcell::priors;
using latentcell::test::errorOf;

namespace {

// The networks here are tiny: LibTorch's intra-op threads cost more than they save, and on a
// machine shared by several builds they make a test many times slower.
class SingleThreaded : public ::testing::Environment {
 public:
  void SetUp() override { torch::set_num_threads(1); }
};
const auto* const kSingleThreaded = ::testing::AddGlobalTestEnvironment(new SingleThreaded);

// Every parameter drawn from N(0, scale^2), so zero-initialised layers stop hiding the network.
void randomize(torch::nn::Module& m, uint64_t seed, double scale = 0.3) {
  torch::NoGradGuard ng;
  auto gen = latentcell::core::makeGenerator(seed);
  for (auto& p : m.parameters()) p.copy_(torch::randn(p.sizes(), gen) * scale);
}

std::vector<ConditionColumnSpec> twoColumns() {
  return {ConditionColumnSpec{"cell_type", {"a", "b", "c"}, {}, {}},
          ConditionColumnSpec{"perturbation", {"ctrl", "g1", "g2", "g3"}, {}, {}}};
}

PriorConfig smallConfig(const std::string& kind) {
  PriorConfig c;
  c.kind = kind;
  c.backbone.dim = 32;
  c.backbone.depth = 2;
  c.backbone.heads = 4;
  c.conditioning.dropout = 0.0;
  return c;
}

// Random condition ids [n, 2] for twoColumns().
torch::Tensor randomIds(int64_t n, uint64_t seed) {
  auto gen = latentcell::core::makeGenerator(seed);
  return torch::stack({torch::randint(0, 3, {n}, gen), torch::randint(0, 4, {n}, gen)}, 1);
}

void expectClose(const torch::Tensor& got, const torch::Tensor& want, double tol, const std::string& what = "") {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double err = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tol) << what << ": max abs error " << err;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// DiT backbone

TEST(DitBackbone, AtInitEveryBlockIsTheIdentityAndTheOutputIsZero) {
  torch::manual_seed(0);
  DitBackbone net(DitBackboneOptions{32, 3, 4, 4.0, 0.0, /*in_dim=*/5, 0, /*positions=*/6, /*out_dim=*/5});
  auto x = torch::randn({3, 6, 5});
  auto c = torch::randn({3, 32});
  auto h = net->embed(x);
  for (auto block : net->blockList()) EXPECT_TRUE(torch::equal(block->forward(h, c), h));
  EXPECT_TRUE(torch::equal(net->run(h, c), torch::zeros({3, 6, 5})));
  // The same with a condition token joining the blocks.
  EXPECT_TRUE(torch::equal(net->run(h, c, torch::randn({3, 1, 32})), torch::zeros({3, 6, 5})));
  // Randomised, the output is not zero: the checks above can fail.
  randomize(*net, 1);
  EXPECT_GT(net->run(net->embed(x), c).abs().max().item<double>(), 1e-3);
}

TEST(DitBackbone, WithoutPositionsItIsPermutationEquivariantAndTheConditionTokenMatters) {
  DitBackbone net(DitBackboneOptions{32, 2, 4, 4.0, 0.0, /*in_dim=*/3, 0, /*positions=*/0, /*out_dim=*/3});
  randomize(*net, 2);
  auto x = torch::randn({2, 7, 3});
  auto c = torch::randn({2, 32});
  auto token = torch::randn({2, 1, 32});
  auto perm = torch::randperm(7);
  auto out = net->run(net->embed(x), c, token);
  auto out_perm = net->run(net->embed(x.index_select(1, perm)), c, token);
  expectClose(out_perm, out.index_select(1, perm), 1e-5, "permuted cells");
  auto out_other_token = net->run(net->embed(x), c, torch::randn({2, 1, 32}));
  EXPECT_GT((out_other_token - out).abs().max().item<double>(), 1e-3);
}

TEST(DitBackbone, RejectsBadOptionsAndInputs) {
  EXPECT_NE(errorOf([] { DitBackbone(DitBackboneOptions{30, 2, 4, 4.0, 0.0, 3, 0, 0, 3}); }).find("multiple of heads"),
            std::string::npos);
  EXPECT_NE(errorOf([] { DitBackbone(DitBackboneOptions{32, 2, 4, 4.0, 0.0, 3, 5, 0, 3}); }).find("exactly one"),
            std::string::npos);
  DitBackbone net(DitBackboneOptions{32, 1, 4, 4.0, 0.0, 0, /*vocab=*/9, /*positions=*/4, 9});
  EXPECT_NE(errorOf([&] { net->embed(torch::zeros({2, 5}, torch::kLong)); }).find("exceed the 4 learned positions"),
            std::string::npos);
  EXPECT_NE(errorOf([&] { net->embed(torch::zeros({2, 4, 3})); }).find("token ids"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Condition encoder

TEST(ConditionEncoder, NullRowsNegativeIdsAndTheSumWithTheTimestep) {
  ConditionEncoder enc(ConditionEncoderOptions{16, true, 1.0, 0.0, DropoutMode::Joint}, twoColumns());
  randomize(*enc, 3);
  auto ids = torch::tensor({0, 3, 2, -1}, torch::kLong).view({2, 2});
  auto null = torch::tensor({false, false, true, false}).view({2, 2});
  auto e = enc->embedKeys(ids, null);  // [2, 2, 16]
  auto* t0 = enc->columns[0]->as<ConditionColumnImpl>();
  auto* t1 = enc->columns[1]->as<ConditionColumnImpl>();
  expectClose(e[0][0], t0->table[0], 0);
  expectClose(e[0][1], t1->table[3], 0);
  expectClose(e[1][0], t0->table[3], 0, "dropped key -> null row (index = vocabulary size)");
  expectClose(e[1][1], t1->table[4], 0, "id -1 -> null row");
  auto t = torch::tensor({0.25f, 0.75f});
  expectClose(enc(ids, null, t), e.sum(1) + enc->time_embed(t), 1e-6, "c = t_emb + sum of embeddings");
  EXPECT_NE(errorOf([&] { enc(ids, null); }).find("pass t"), std::string::npos);
}

TEST(ConditionEncoder, ExternalEmbeddingsAreProjectedAndMissingLabelsUseTheNullVector) {
  latentcell::test::TempDir dir;
  std::ofstream(dir.file("esm.csv")) << "gene,d0,d1,d2\ng1,1,0,2\ng2,-1,3,0.5\ng3,0,0,1\n";
  auto table = latentcell::data::loadEmbeddingTable(dir.file("esm.csv"));
  const std::vector<std::string> labels{"ctrl", "g1", "g2", "g3"};
  auto msg = errorOf([&] { externalColumn("perturbation", labels, table, false); });
  EXPECT_NE(msg.find("'perturbation'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ctrl"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing_as_null"), std::string::npos) << msg;

  auto spec = externalColumn("perturbation", labels, table, true);
  ConditionEncoder enc(ConditionEncoderOptions{8, false, 1.0, 0.0, DropoutMode::Joint}, std::vector<ConditionColumnSpec>{spec});
  randomize(*enc, 4);
  auto* col = enc->columns[0]->as<ConditionColumnImpl>();
  ASSERT_TRUE(col->isExternal());
  auto e = enc->embedKeys(torch::tensor({1, 2, 0, 3}, torch::kLong).view({4, 1}),
                          torch::tensor({false, false, false, true}).view({4, 1}));
  expectClose(e[0][0], col->proj(torch::tensor({1.0f, 0.0f, 2.0f})), 1e-6, "g1 projected");
  expectClose(e[1][0], col->proj(torch::tensor({-1.0f, 3.0f, 0.5f})), 1e-6, "g2 projected");
  expectClose(e[2][0], col->null_embedding, 0, "label without a vector -> null vector");
  expectClose(e[3][0], col->null_embedding, 0, "dropped -> null vector");
}

TEST(ConditionEncoder, RejectsIdsOutsideTheVocabularyAndWrongShapes) {
  ConditionEncoder enc(ConditionEncoderOptions{8, false, 1.0, 0.0, DropoutMode::Joint}, twoColumns());
  auto msg = errorOf([&] { enc->checkIds(torch::tensor({0, 4}, torch::kLong).view({1, 2})); });
  EXPECT_NE(msg.find("'perturbation': id 4 is outside its vocabulary of 4 labels"), std::string::npos) << msg;
  msg = errorOf([&] { enc->checkIds(torch::zeros({3, 1}, torch::kLong)); });
  EXPECT_NE(msg.find("[batch, 2] int64"), std::string::npos) << msg;
  msg = errorOf([&] { enc->checkIds(torch::zeros({3, 2})); });
  EXPECT_NE(msg.find("cell_type, perturbation"), std::string::npos) << msg;
}

TEST(ConditionEncoder, JointDropoutMasksAllKeysOfASampleAdditiveMasksEachKey) {
  const int64_t n = 4000;
  const double p = 0.3;
  auto gen = latentcell::core::makeGenerator(5);
  ConditionEncoder joint(ConditionEncoderOptions{8, false, 1.0, p, DropoutMode::Joint}, twoColumns());
  auto m = joint->sampleDropout(n, torch::kCPU, gen);  // [n, 2]
  EXPECT_TRUE(torch::equal(m.select(1, 0), m.select(1, 1)));
  EXPECT_NEAR(m.select(1, 0).to(torch::kDouble).mean().item<double>(), p, 0.03);  // ~4 sigma

  ConditionEncoder additive(ConditionEncoderOptions{8, false, 1.0, p, DropoutMode::Additive}, twoColumns());
  auto a = additive->sampleDropout(n, torch::kCPU, gen);
  EXPECT_NEAR(a.select(1, 0).to(torch::kDouble).mean().item<double>(), p, 0.03);
  EXPECT_NEAR(a.select(1, 1).to(torch::kDouble).mean().item<double>(), p, 0.03);
  const double mixed = a.select(1, 0).ne(a.select(1, 1)).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(mixed, 2 * p * (1 - p), 0.04);  // independent keys
}

// ------------------------------------------------------------------------------------------------
// Autoregressive prior

TEST(ArPrior, CannotSeeTheCodeItPredictsOrAnyLaterCode) {
  const int64_t L = 8, K = 12;
  ArPrior prior(smallConfig("ar"), L, K, twoColumns());
  randomize(prior, 6);
  auto gen = latentcell::core::makeGenerator(7);
  auto codes = torch::randint(0, K, {4, L}, gen);
  auto ids = randomIds(4, 8);
  auto base = prior.logits(codes, ids);  // [4, L, K]
  for (int64_t l = 0; l < L; ++l) {
    auto changed = codes.clone();
    changed.narrow(1, l, L - l).copy_((codes.narrow(1, l, L - l) + 1 + torch::randint(0, K - 1, {4, L - l}, gen)) % K);
    auto out = prior.logits(changed, ids);
    expectClose(out.narrow(1, 0, l + 1), base.narrow(1, 0, l + 1), 1e-5, "positions <= " + std::to_string(l));
    if (l + 1 < L) {  // position l + 1 reads code l: the test would see a leak
      EXPECT_GT((out[0][l + 1] - base[0][l + 1]).abs().max().item<double>(), 1e-4) << "position " << l + 1;
    }
  }
}

TEST(ArPrior, KvCachedSamplingEqualsUncachedSampling) {
  const int64_t L = 10, K = 16, n = 32;
  ArPrior prior(smallConfig("ar"), L, K, twoColumns());
  randomize(prior, 9);
  prior.eval();
  SampleRequest request{randomIds(n, 10), {}};
  for (auto [temperature, top_k] : std::vector<std::pair<double, int64_t>>{{1.0, 0}, {0.7, 5}}) {
    SamplerOptions o = prior.defaultSamplerOptions();
    o.temperature = temperature;
    o.top_k = top_k;
    o.kv_cache = true;
    auto g1 = latentcell::core::makeGenerator(11);
    auto cached = prior.sample(request, n, o, g1);
    o.kv_cache = false;
    auto g2 = latentcell::core::makeGenerator(11);
    auto uncached = prior.sample(request, n, o, g2);
    ASSERT_EQ(cached.sizes(), (std::vector<int64_t>{n, L}));
    EXPECT_TRUE(torch::equal(cached, uncached)) << "temperature " << temperature << " top_k " << top_k;
    EXPECT_EQ(prior.lastEvaluations(), L);
    // Not a constant: the samples vary across cells.
    EXPECT_GT(std::get<0>(at::_unique(cached.select(1, L - 1))).numel(), 1);
  }
}

TEST(ArPrior, TopKRestrictsTheCodesAndTemperatureZeroIsGreedy) {
  const int64_t L = 6, K = 20, n = 16, k = 3;
  ArPrior prior(smallConfig("ar"), L, K, twoColumns());
  randomize(prior, 12);
  prior.eval();
  SampleRequest request{randomIds(n, 13), {}};
  SamplerOptions o = prior.defaultSamplerOptions();
  o.top_k = k;
  auto gen = latentcell::core::makeGenerator(14);
  auto codes = prior.sample(request, n, o, gen);
  auto logits = prior.logits(codes, request.conditions);                           // [n, L, K]
  auto kth = std::get<0>(logits.topk(k, -1)).select(-1, k - 1);                    // [n, L]
  auto chosen = logits.gather(-1, codes.unsqueeze(-1)).squeeze(-1);                // [n, L]
  EXPECT_TRUE(chosen.ge(kth - 1e-5).all().item<bool>()) << "a code outside the top " << k;

  o.temperature = 0;
  o.top_k = 0;
  auto greedy = prior.sample(request, n, o, gen);
  auto greedy_logits = prior.logits(greedy, request.conditions);
  EXPECT_TRUE(torch::equal(greedy, greedy_logits.argmax(-1)));
}

// ------------------------------------------------------------------------------------------------
// Masked diffusion prior

TEST(MdlmPrior, LossIsTheOneOverTWeightedMaskedNllAveragedOverAllPositions) {
  const int64_t L = 5, K = 7;
  MdlmPrior prior(smallConfig("mdlm"), L, K, twoColumns());
  randomize(prior, 15);
  auto codes = torch::tensor({{0, 1, 2, 3, 4}, {6, 5, 4, 3, 2}, {1, 1, 1, 1, 1}}, torch::kLong);
  auto masked = torch::tensor({{true, false, true, false, false},
                               {true, true, true, true, true},
                               {false, false, false, true, false}});
  auto t = torch::tensor({0.2f, 0.9f, 0.05f});
  auto ids = randomIds(3, 16);
  auto null = torch::zeros({3, 2}, torch::kBool);
  const double loss = prior.lossAt(codes, ids, t, masked, null)[0].second.item<double>();

  auto z = torch::where(masked, prior.maskId(), codes);
  auto log_p = torch::log_softmax(prior.logits(z, t, ids), -1);  // [3, L, K]
  double hand = 0;
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t l = 0; l < L; ++l)
      if (masked[b][l].item<bool>()) hand += -log_p[b][l][codes[b][l].item<int64_t>()].item<double>() / t[b].item<double>();
  hand /= 3.0 * L;
  EXPECT_NEAR(loss, hand, 1e-5 * std::abs(hand));
}

TEST(MdlmPrior, SubsCopiesUnmaskedTokensAndNeverPredictsTheMask) {
  const int64_t L = 6, K = 9;
  MdlmPrior prior(smallConfig("mdlm"), L, K, twoColumns());
  randomize(prior, 17);
  auto z = torch::tensor({{K, int64_t{3}, K, int64_t{0}, int64_t{8}, K}}, torch::kLong);
  auto log_p = prior.logProbs(z, torch::tensor({0.5f}), randomIds(1, 18));  // [1, L, K]
  ASSERT_EQ(log_p.size(-1), K);  // no output for the mask token: its logit is -inf
  for (int64_t l = 0; l < L; ++l) {
    const int64_t token = z[0][l].item<int64_t>();
    if (token == K) {
      EXPECT_TRUE(torch::isfinite(log_p[0][l]).all().item<bool>());
      EXPECT_NEAR(log_p[0][l].exp().sum().item<double>(), 1.0, 1e-5);
    } else {
      for (int64_t k = 0; k < K; ++k) {
        const double v = log_p[0][l][k].item<double>();
        if (k == token) EXPECT_EQ(v, 0.0);
        else EXPECT_EQ(v, -std::numeric_limits<double>::infinity());
      }
    }
  }
}

TEST(MdlmPrior, AntitheticTimesAreStratifiedOverTheBatch) {
  MdlmPrior prior(smallConfig("mdlm"), 4, 5, twoColumns());
  auto gen = latentcell::core::makeGenerator(19);
  const int64_t b = 16;
  auto t = prior.sampleTimes(b, gen).to(torch::kDouble);
  const double eps = prior.eps();
  EXPECT_TRUE(t.ge(eps).all().item<bool>());
  EXPECT_TRUE(t.le(1.0).all().item<bool>());
  auto bins = ((t - eps) / (1 - eps) * b).floor().to(torch::kLong);
  EXPECT_TRUE(torch::equal(std::get<0>(bins.sort()), torch::arange(b))) << bins;
}

TEST(MdlmPrior, SamplerLeavesNoMaskAndReusesPredictionsWhileNothingChanges) {
  const int64_t L = 6, K = 11, n = 24;
  MdlmPrior prior(smallConfig("mdlm"), L, K, twoColumns());
  randomize(prior, 20);
  prior.eval();
  SampleRequest request{randomIds(n, 21), {}};
  for (int64_t steps : {1, 3, 128}) {
    SamplerOptions o = prior.defaultSamplerOptions();
    o.steps = steps;
    auto gen = latentcell::core::makeGenerator(22);
    auto codes = prior.sample(request, n, o, gen);
    ASSERT_EQ(codes.sizes(), (std::vector<int64_t>{n, L}));
    EXPECT_TRUE(codes.ge(0).all().item<bool>()) << steps << " steps";
    EXPECT_TRUE(codes.lt(K).all().item<bool>()) << steps << " steps: a mask token remains";
    // One evaluation at the first step and after every step that changed the batch.
    EXPECT_LE(prior.lastEvaluations(), std::min(steps, n * L) + 1) << steps << " steps";
  }
  // One sample, many steps: most steps change nothing and reuse the prediction, and every step
  // that changes something unmasks at least one of the L positions: at most L + 1 evaluations.
  SamplerOptions o = prior.defaultSamplerOptions();
  o.steps = 1000;
  auto gen = latentcell::core::makeGenerator(23);
  SampleRequest one{torch::tensor({1, 2}, torch::kLong), {}};
  auto codes = prior.sample(one, 1, o, gen);
  EXPECT_TRUE(codes.lt(K).all().item<bool>());
  EXPECT_LE(prior.lastEvaluations(), L + 1);
  EXPECT_GE(prior.lastEvaluations(), 2);
}

// The per-sample prediction cache changes nothing: a plain loop that re-runs the network on the
// whole batch every step, drawing the same random numbers in the same order, gives the same codes.
TEST(MdlmPrior, CachedPredictionsGiveTheSamplesOfRecomputingEveryStep) {
  const int64_t L = 6, K = 9, n = 8, steps = 10;
  MdlmPrior prior(smallConfig("mdlm"), L, K, twoColumns());
  randomize(prior, 46);
  prior.eval();
  prior.to(torch::kDouble);
  torch::NoGradGuard ng;
  auto ids = randomIds(n, 47);
  SamplerOptions o = prior.defaultSamplerOptions();
  o.steps = steps;
  auto g1 = latentcell::core::makeGenerator(48);
  auto cached = prior.sample(SampleRequest{ids, {}}, n, o, g1);

  auto g2 = latentcell::core::makeGenerator(48);
  auto x = torch::full({n, L}, K, torch::kLong);
  auto times = torch::linspace(1.0, prior.eps(), steps + 1, torch::kDouble);
  int64_t forwards = 0;
  for (int64_t i = 0; i < steps; ++i) {
    auto masked = x.eq(K);
    if (!masked.any().item<bool>()) break;
    const double t = times[i].item<double>(), s = times[i + 1].item<double>();
    auto logits = prior.logits(x, torch::full({n}, t, torch::kDouble), ids);
    ++forwards;
    auto drawn = sampleCategorical(logits, 1.0, 0, g2);
    auto unmask = masked.logical_and(uniform({n, L}, torch::kCPU, g2).lt((t - s) / t));
    x = torch::where(unmask, drawn, x);
  }
  auto masked = x.eq(K);
  if (masked.any().item<bool>()) x = torch::where(masked, prior.logits(x, torch::full({n}, 1e-3, torch::kDouble), ids).argmax(-1), x);
  EXPECT_TRUE(torch::equal(cached, x)) << cached << x;
  EXPECT_LE(prior.lastEvaluations(), forwards + 1);
}

// ------------------------------------------------------------------------------------------------
// ODE solvers

namespace {

// dx/dt = A x with A = [[0, -w], [w, 0]] * (1 + t): rotation by the angle w (t + t^2 / 2).
VelocityField rotation(double w, std::vector<double>* seen = nullptr) {
  return [w, seen](const at::Tensor& x, double t) {
    if (seen) seen->push_back(t);
    auto a = torch::tensor({{0.0, -w}, {w, 0.0}}, torch::kDouble) * (1 + t);
    return torch::matmul(x, a.t());
  };
}

at::Tensor rotated(const at::Tensor& x0, double angle) {
  auto r = torch::tensor({{std::cos(angle), -std::sin(angle)}, {std::sin(angle), std::cos(angle)}}, torch::kDouble);
  return torch::matmul(x0, r.t());
}

double solveError(OdeMethod method, int64_t steps) {
  auto x0 = torch::tensor({{1.0, 0.5}, {-0.3, 2.0}}, torch::kDouble);
  OdeOptions o;
  o.method = method;
  o.steps = steps;
  auto r = integrate(rotation(2.0), x0, 0.0, 1.0, o);
  return (r.x - rotated(x0, 2.0 * 1.5)).abs().max().item<double>();
}

}  // namespace

TEST(OdeSolver, EulerIsFirstOrderHeunSecondOrder) {
  const double e1 = solveError(OdeMethod::Euler, 200), e2 = solveError(OdeMethod::Euler, 400);
  EXPECT_NEAR(e1 / e2, 2.0, 0.2);
  const double h1 = solveError(OdeMethod::Heun, 100), h2 = solveError(OdeMethod::Heun, 200);
  EXPECT_NEAR(h1 / h2, 4.0, 0.4);
}

TEST(OdeSolver, Dopri5MeetsItsToleranceAdaptively) {
  auto x0 = torch::tensor({{1.0, 0.5}, {-0.3, 2.0}}, torch::kDouble);
  OdeOptions o;
  o.method = OdeMethod::Dopri5;
  o.atol = o.rtol = 1e-8;
  auto r = integrate(rotation(2.0), x0, 0.0, 1.0, o);
  EXPECT_LT((r.x - rotated(x0, 3.0)).abs().max().item<double>(), 1e-6);
  EXPECT_LT(r.evaluations, 400);
  o.atol = o.rtol = 1e-4;
  auto loose = integrate(rotation(2.0), x0, 0.0, 1.0, o);
  EXPECT_LT(loose.evaluations, r.evaluations);  // adaptive: looser tolerance, fewer steps
  EXPECT_LT((loose.x - rotated(x0, 3.0)).abs().max().item<double>(), 1e-2);
  o.max_steps = 2;
  o.atol = o.rtol = 1e-10;
  EXPECT_NE(errorOf([&] { integrate(rotation(2.0), x0, 0.0, 1.0, o); }).find("raise max_steps"), std::string::npos);
}

TEST(OdeSolver, HeunWithFinalEulerNeverEvaluatesAtTheEnd) {
  std::vector<double> seen;
  OdeOptions o;
  o.method = OdeMethod::Heun;
  o.steps = 5;
  o.final_euler = true;
  auto r = integrate(rotation(1.0, &seen), torch::ones({1, 2}, torch::kDouble), 0.0, 1.0, o);
  EXPECT_EQ(r.evaluations, 2 * 4 + 1);
  for (double t : seen) EXPECT_LT(t, 1.0 - 1e-9);
}

// ------------------------------------------------------------------------------------------------
// Flow matching

TEST(FlowMatchingPrior, LossIsTheMseToTheStraightLineVelocity) {
  FlowMatchingPrior prior(smallConfig("flow"), 3, 4, twoColumns());
  randomize(prior, 24);
  auto x1 = torch::randn({5, 3, 4}), x0 = torch::randn({5, 3, 4});
  auto t = torch::rand({5});
  auto ids = randomIds(5, 25);
  auto null = torch::zeros({5, 2}, torch::kBool);
  auto tt = t.view({-1, 1, 1});
  auto want = torch::mse_loss(prior.velocity(tt * x1 + (1 - tt) * x0, t, ids, null), x1 - x0);
  expectClose(prior.lossAt(x1, ids, t, x0, null)[0].second, want, 1e-6);
}

TEST(FlowMatchingPrior, GuidanceWeightOneIsTheConditionalFieldZeroTheUnconditional) {
  FlowMatchingPrior prior(smallConfig("flow"), 3, 4, twoColumns());
  randomize(prior, 26);
  prior.to(torch::kDouble);  // the batched guided pass and the separate passes agree to rounding
  auto x = torch::randn({6, 3, 4}, torch::kDouble);
  auto t = torch::rand({6}, torch::kDouble);
  auto ids = randomIds(6, 27);
  auto all = [](bool v) { return torch::full({6, 2}, v, torch::kBool); };
  auto v_cond = prior.velocity(x, t, ids, all(false));
  auto v_null = prior.velocity(x, t, ids, all(true));
  ASSERT_GT((v_cond - v_null).abs().max().item<double>(), 1e-3);
  SamplerOptions o;
  o.guidance_mode = GuidanceMode::Joint;
  o.guidance = 1.0;
  expectClose(prior.guidedVelocity(x, t, ids, o), v_cond, 1e-10, "joint w = 1");
  o.guidance = 0.0;
  expectClose(prior.guidedVelocity(x, t, ids, o), v_null, 1e-10, "joint w = 0");
  o.guidance = 2.5;
  expectClose(prior.guidedVelocity(x, t, ids, o), v_null + 2.5 * (v_cond - v_null), 1e-10, "joint w = 2.5");

  // Additive: one pass per key, each conditioned on that key alone.
  auto only = [&](int64_t k) {
    auto m = all(true);
    m.select(1, k).fill_(false);
    return prior.velocity(x, t, ids, m);
  };
  o.guidance_mode = GuidanceMode::Additive;
  o.guidance_weights = {0.5, 2.0};
  expectClose(prior.guidedVelocity(x, t, ids, o), v_null + 0.5 * (only(0) - v_null) + 2.0 * (only(1) - v_null), 1e-10,
              "additive");
  o.guidance_weights = {0.0, 0.0};
  expectClose(prior.guidedVelocity(x, t, ids, o), v_null, 1e-10, "additive w = 0");
  o.guidance_weights = {1.0};
  EXPECT_NE(errorOf([&] { prior.guidedVelocity(x, t, ids, o); }).find("one weight per condition column (2)"),
            std::string::npos);
}

namespace {

// Four Gaussians (sd 0.2) at (+-1.5, +-1.5), as [n, 1, 2] latents.
torch::Tensor mixture(int64_t n, at::Generator& gen) {
  auto corner = torch::randint(0, 2, {n, 2}, gen).to(torch::kFloat) * 3.0 - 1.5;
  return (corner + 0.2 * torch::randn({n, 2}, gen)).view({n, 1, 2});
}

}  // namespace

// Trains an unconditional flow prior on a 2-D Gaussian mixture (300 Adam steps, learning rate
// 5e-3 decayed linearly; about 5 s of one CPU core) and compares 1000 samples to 1000 fresh
// mixture draws by the biased multi-bandwidth RBF MMD^2 the evaluator reports. Measured: trained
// 0.015 (euler, 100 steps) and 0.016 (dopri5, ~70 evaluations); two independent mixture draws
// 0.005-0.011; the untrained prior (its output layer is zero, so samples are the N(0, I) start)
// 0.28. Threshold: 0.04 for both solvers.
TEST(FlowMatchingPrior, LearnsATwoDimensionalGaussianMixture) {
  torch::manual_seed(28);
  PriorConfig config = smallConfig("flow");
  config.backbone.dim = 64;
  FlowMatchingPrior prior(config, 1, 2, {});
  auto gen = latentcell::core::makeGenerator(29);
  const double lr = 5e-3;
  const int steps = 300;
  torch::optim::Adam opt(prior.parameters(), torch::optim::AdamOptions(lr));
  for (int step = 0; step < steps; ++step) {
    for (auto& group : opt.param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr * (1.0 - static_cast<double>(step) / steps));
    }
    auto loss = prior.loss(PriorBatch{mixture(256, gen), torch::zeros({256, 0}, torch::kLong), {}}, gen)[0].second;
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  prior.eval();
  const int64_t n = 1000;
  auto truth = mixture(n, gen).view({n, 2});
  SampleRequest request{torch::zeros({0}, torch::kLong), {}};
  SamplerOptions o = prior.defaultSamplerOptions();
  o.solver = OdeMethod::Euler;
  o.steps = 100;
  auto euler = prior.sample(request, n, o, gen).view({n, 2});
  EXPECT_EQ(prior.lastEvaluations(), 100);
  o.solver = OdeMethod::Dopri5;
  auto dopri = prior.sample(request, n, o, gen).view({n, 2});
  const int64_t dopri_evaluations = prior.lastEvaluations();
  const double mmd_euler = latentcell::eval::mmdRbfBiased(euler, truth);
  const double mmd_dopri = latentcell::eval::mmdRbfBiased(dopri, truth);
  const double mmd_noise = latentcell::eval::mmdRbfBiased(torch::randn({n, 2}, gen), truth);
  std::cout << "MMD^2 to the mixture: euler(100) " << mmd_euler << ", dopri5 " << mmd_dopri << " ("
            << dopri_evaluations << " evaluations), untrained " << mmd_noise << "\n";
  EXPECT_LT(mmd_euler, 0.04);
  EXPECT_LT(mmd_dopri, 0.04);
  EXPECT_GT(mmd_noise, 0.2);
}

// ------------------------------------------------------------------------------------------------
// JiT endpoint transport

TEST(JitTransportPrior, ConversionsBetweenXAndVAreExact) {
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto x = torch::randn({5, 3, 4}, opts), v = torch::randn({5, 3, 4}, opts), z = torch::randn({5, 3, 4}, opts);
  auto t = torch::tensor({0.0, 0.3, 0.94, 0.97, 1.0}, opts);  // both sides of the clip at 1 - t = 0.05
  expectClose(jitVelocityFromX(jitXFromVelocity(v, z, t, 0.05), z, t, 0.05), v, 1e-12, "v -> x -> v");
  expectClose(jitXFromVelocity(jitVelocityFromX(x, z, t, 0.05), z, t, 0.05), x, 1e-12, "x -> v -> x");
  // On the path z_t = (1 - t) x0 + t x1 the velocity of x1 is x1 - x0 while 1 - t >= 0.05 ...
  auto x0 = torch::randn({5, 3, 4}, opts), x1 = torch::randn({5, 3, 4}, opts);
  auto tt = t.view({-1, 1, 1});
  auto zt = (1 - tt) * x0 + tt * x1;
  auto vt = jitVelocityFromX(x1, zt, t, 0.05);
  expectClose(vt.narrow(0, 0, 3), (x1 - x0).narrow(0, 0, 3), 1e-12, "on the path");
  // ... and (1 - t) / 0.05 of it beyond the clip.
  expectClose(vt[3], (x1 - x0)[3] * (0.03 / 0.05), 1e-12, "clipped");
  // x = z_t + (1 - t) v recovers x1 from the true velocity.
  expectClose(jitXFromVelocity(x1 - x0, zt, t, 0.05).narrow(0, 0, 3), x1.narrow(0, 0, 3), 1e-12, "endpoint");
}

TEST(JitTransportPrior, TheFourVariantsLossesFollowTheirDefinitions) {
  auto x0 = torch::randn({3, 5, 6}), x1 = torch::randn({3, 5, 6});
  auto t = torch::tensor({0.1f, 0.5f, 0.8f});
  auto ids = randomIds(3, 30);
  auto null = torch::zeros({3, 2}, torch::kBool);
  auto tt = t.view({-1, 1, 1});
  auto z = (1 - tt) * x0 + tt * x1;
  for (std::string pred : {"x", "v"}) {
    for (std::string loss : {"x", "v"}) {
      PriorConfig c = smallConfig("jit");
      c.jit.prediction = pred;
      c.jit.loss = loss;
      c.jit.set_summary = true;
      JitTransportPrior prior(c, 6, twoColumns());
      randomize(prior, 31);  // the same weights for every variant
      auto out = prior.network(z, t, ids, null);
      auto x_hat = pred == "x" ? out : jitXFromVelocity(out, z, t, 0.05);
      auto v_hat = pred == "v" ? out : jitVelocityFromX(out, z, t, 0.05);
      auto want = loss == "x" ? torch::mse_loss(x_hat, x1) : torch::mse_loss(v_hat, x1 - x0);  // t < 0.95
      auto got = prior.lossAt(x0, x1, ids, t, null);
      // The losses reach ~100 (v-loss divides by 1 - t), where float32's own rounding of the two
      // operation orders exceeds 1e-5: the tolerance is 1e-5 relative above 1.
      const double tol = 1e-5 * std::max(1.0, want.abs().item<double>());
      expectClose(got[0].second, want, tol, pred + "-pred/" + loss + "-loss");
      if (pred == "v" && loss == "v") {  // plain flow matching: the output against x1 - x0
        expectClose(got[0].second, torch::mse_loss(out, x1 - x0), tol, "v/v is flow matching");
      }
    }
  }
}

TEST(JitTransportPrior, PermutationEquivariantInTheCellsAndZeroAtInit) {
  PriorConfig c = smallConfig("jit");
  c.jit.set_summary = true;
  JitTransportPrior prior(c, 6, twoColumns());
  prior.to(torch::kDouble);
  auto z = torch::randn({2, 9, 6}, torch::kDouble);
  auto t = torch::tensor({0.3, 0.6}, torch::kDouble);
  auto ids = randomIds(2, 32);
  EXPECT_TRUE(torch::equal(prior.network(z, t, ids), torch::zeros({2, 9, 6}, torch::kDouble)));  // x_hat = 0 at init
  randomize(prior, 33);
  auto perm = torch::randperm(9);
  auto out = prior.network(z, t, ids);
  expectClose(prior.network(z.index_select(1, perm), t, ids), out.index_select(1, perm), 1e-10);
  // The conditions reach the cells through the seed token.
  auto other = ids.clone();
  other.select(1, 1).fill_(3);
  other[0][1] = 2;
  EXPECT_GT((prior.network(z, t, other) - out).abs().max().item<double>(), 1e-4);
}

// Cells of a control set are shifted by +1 or -1 in every coordinate depending on the
// perturbation; x-pred/x-loss learns the transport, and the Heun sampler moves held-out control
// sets by the right shift. The test-sized model trains 500 steps with t ~ sigmoid(N(0, 1)): with
// the default N(-0.8, 0.8), t > 0.8 has probability 0.3%, and the late part of the path, where the
// sampler's endpoint is decided, would stay untrained in seconds of training. Measured means are
// within 0.2 of +-1; an unconditional model would put both at 0.
TEST(JitTransportPrior, LearnsAConditionalShiftFromControlSets) {
  torch::manual_seed(34);
  PriorConfig c = smallConfig("jit");
  c.jit.t_mean = 0.0;
  c.jit.t_std = 1.0;
  std::vector<ConditionColumnSpec> columns{ConditionColumnSpec{"perturbation", {"up", "down"}, {}, {}}};
  JitTransportPrior prior(c, 2, columns);
  auto gen = latentcell::core::makeGenerator(35);
  auto batch = [&](int64_t sets) {
    auto ids = torch::randint(0, 2, {sets, 1}, gen);
    auto shift = (1.0 - 2.0 * ids.to(torch::kFloat)).view({sets, 1, 1});
    auto control = torch::randn({sets, 8, 2}, gen);
    auto perturbed = torch::randn({sets, 8, 2}, gen) + shift;
    return PriorBatch{perturbed, ids, control};
  };
  torch::optim::Adam opt(prior.parameters(), torch::optim::AdamOptions(1e-3));
  for (int step = 0; step < 500; ++step) {
    auto loss = prior.loss(batch(32), gen)[0].second;
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  prior.eval();
  // 16 held-out control sets of the training size per perturbation (the seed token's share of
  // attention depends on the set size).
  auto control = torch::randn({32, 8, 2}, gen);
  auto ids = torch::cat({torch::zeros({16, 1}, torch::kLong), torch::ones({16, 1}, torch::kLong)});
  auto out = prior.sample(SampleRequest{ids, control}, 32, prior.defaultSamplerOptions(), gen);  // [32, 8, 2]
  EXPECT_EQ(prior.lastEvaluations(), 2 * 49 + 1);
  auto up = out.narrow(0, 0, 16).mean({0, 1}), down = out.narrow(0, 16, 16).mean({0, 1});  // [2] each
  for (int64_t k = 0; k < 2; ++k) {
    EXPECT_NEAR(up[k].item<double>(), 1.0, 0.35) << "coordinate " << k;
    EXPECT_NEAR(down[k].item<double>(), -1.0, 0.35) << "coordinate " << k;
  }
}

TEST(JitTransportPrior, StartsFromControlMixedOrNoise) {
  auto control = torch::randn({2, 4, 3});
  for (std::string start : {"control", "mixed", "noise"}) {
    PriorConfig c = smallConfig("jit");
    c.jit.start = start;
    c.jit.cells = 5;
    JitTransportPrior prior(c, 3, twoColumns());
    auto g1 = latentcell::core::makeGenerator(36);
    auto x0 = prior.start(control, control.sizes(), g1);
    auto g2 = latentcell::core::makeGenerator(36);
    auto eps = torch::randn({2, 4, 3}, g2);
    if (start == "control") EXPECT_TRUE(torch::equal(x0, control));
    if (start == "mixed") expectClose(x0, eps + 0.5 * control, 1e-6, "Z0' = eps + 0.5 Z0");
    if (start == "noise") EXPECT_TRUE(torch::equal(x0, eps));
    // An untrained x-predictor returns 0, so the field is -z / max(1 - t, 0.05): the same linear
    // contraction of every element of the start the sampler draws (from the same generator).
    SampleRequest request{torch::tensor({0, 1}, torch::kLong), start == "noise" ? torch::Tensor() : control};
    auto gen = latentcell::core::makeGenerator(37);
    auto out = prior.sample(request, 2, prior.defaultSamplerOptions(), gen);
    const int64_t cells = start == "noise" ? 5 : 4;
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, cells, 3}));
    auto g3 = latentcell::core::makeGenerator(37);
    auto ratio = out / prior.start(control, {2, cells, 3}, g3);
    EXPECT_LT((ratio - ratio.mean()).abs().max().item<double>(), 1e-4) << start;
    EXPECT_GT(ratio.mean().item<double>(), 0.0) << start;
    EXPECT_LT(ratio.mean().item<double>(), 0.05) << start;
  }
  JitTransportPrior prior(smallConfig("jit"), 3, twoColumns());
  auto gen = latentcell::core::makeGenerator(38);
  auto msg = errorOf([&] { prior.sample(SampleRequest{torch::tensor({0, 1}, torch::kLong), {}}, 2, prior.defaultSamplerOptions(), gen); });
  EXPECT_NE(msg.find("needs control sets"), std::string::npos) << msg;
}

// ------------------------------------------------------------------------------------------------
// All priors: interface, gradients, latent kinds, configs

namespace {

PriorContext codesContext() { return PriorContext{LatentKind::Codes, "fsq", 6, 0, 10, twoColumns()}; }
PriorContext continuousContext() { return PriorContext{LatentKind::Continuous, "gaussian", 4, 3, 0, twoColumns()}; }

PriorBatch batchFor(const Prior& prior, int64_t b, at::Generator& gen) {
  const auto& s = prior.latentSpec();
  PriorBatch batch;
  batch.conditions = randomIds(b, 39);
  if (s.kind == LatentKind::Codes) {
    batch.latents = torch::randint(0, s.codebook, {b, s.tokens}, gen);
  } else if (s.tokens == 0) {
    batch.latents = torch::randn({b, 5, s.dim}, gen);
    batch.control = torch::randn({b, 5, s.dim}, gen);
  } else {
    batch.latents = torch::randn({b, s.tokens, s.dim}, gen);
  }
  return batch;
}

}  // namespace

TEST(Priors, GradientsReachEveryParameter) {
  for (std::string variant : {"ar", "mdlm", "mdlm+time", "flow", "flow+external", "jit", "jit+adaln"}) {
    const std::string kind = variant.substr(0, variant.find('+'));
    PriorConfig c = smallConfig(kind);
    c.conditioning.dropout = 0.5;  // the null rows take part too
    c.conditioning.dropout_mode = "additive";
    c.mdlm.time_conditioning = variant == "mdlm+time";
    c.jit.set_summary = true;
    if (variant == "jit+adaln") c.jit.condition = "adaln";
    auto context = latentKindOf(kind) == LatentKind::Codes ? codesContext() : continuousContext();
    if (variant == "flow+external") {  // perturbation from projected vectors, one label without a vector
      context.columns[1].external = torch::randn({4, 5});
      context.columns[1].missing = {1, 0, 0, 0};
    }
    auto prior = makePrior(c, context);
    randomize(*prior, 40);
    auto gen = latentcell::core::makeGenerator(41);
    auto losses = prior->loss(batchFor(*prior, 16, gen), gen);
    ASSERT_FALSE(losses.empty());
    EXPECT_EQ(losses[0].first, "loss");
    losses[0].second.backward();
    for (const auto& p : prior->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << variant << ": no gradient for " << p.key();
      EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << variant << ": " << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << variant << ": zero gradient for " << p.key();
    }
  }
}

TEST(Priors, SampleShapesAndKinds) {
  for (std::string kind : {"ar", "mdlm", "flow", "jit"}) {
    PriorConfig c = smallConfig(kind);
    c.flow.solver = "euler";
    c.flow.steps = 4;
    c.mdlm.steps = 4;
    c.jit.steps = 4;
    auto prior = makePrior(c, latentKindOf(kind) == LatentKind::Codes ? codesContext() : continuousContext());
    EXPECT_EQ(std::string(prior->kindName()), kind);
    randomize(*prior, 42);
    auto gen = latentcell::core::makeGenerator(43);
    SampleRequest request{torch::tensor({2, 1}, torch::kLong), {}};
    if (kind == "jit") request.control = torch::randn({3, 7, 12});
    auto out = prior->sample(request, 3, prior->defaultSamplerOptions(), gen);
    if (kind == "ar" || kind == "mdlm") {
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 6}));
      EXPECT_EQ(out.scalar_type(), torch::kLong);
    } else if (kind == "flow") {
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 4, 3}));
    } else {
      EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 7, 12}));  // cells of width L * d
    }
    EXPECT_NO_THROW(prior->checkLatents(out, "samples"));
  }
}

TEST(Priors, AnFsqPriorOnGaussianLatentsIsAClearError) {
  // At construction: the factory compares the prior family with the autoencoder's bottleneck.
  auto msg = errorOf([] { makePrior(smallConfig("ar"), continuousContext()); });
  EXPECT_NE(msg.find("prior.kind 'ar' models FSQ code indices"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bottleneck 'gaussian'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("use prior.kind flow or jit"), std::string::npos) << msg;
  EXPECT_THROW(makePrior(smallConfig("mdlm"), continuousContext()), latentcell::core::ConfigError);
  msg = errorOf([] { makePrior(smallConfig("flow"), codesContext()); });
  EXPECT_NE(msg.find("models continuous latents but the autoencoder (bottleneck 'fsq') produces FSQ code indices"),
            std::string::npos)
      << msg;
  EXPECT_THROW(checkLatentCompatibility("jit", LatentKind::Codes, ""), latentcell::core::ConfigError);
  EXPECT_NO_THROW(checkLatentCompatibility("mdlm", LatentKind::Codes, "fsq"));

  // At training time: a batch of the wrong kind or shape.
  auto ar = makePrior(smallConfig("ar"), codesContext());
  auto gen = latentcell::core::makeGenerator(44);
  msg = errorOf([&] { ar->loss(PriorBatch{torch::randn({4, 6, 3}), randomIds(4, 45), {}}, gen); });
  EXPECT_NE(msg.find("the ar prior models FSQ code indices but codes are floating-point"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bottleneck is fsq"), std::string::npos) << msg;
  msg = errorOf([&] { ar->loss(PriorBatch{torch::zeros({4, 5}, torch::kLong), randomIds(4, 45), {}}, gen); });
  EXPECT_NE(msg.find("must be [batch, 6] int64 codes in [0, 10)"), std::string::npos) << msg;
  msg = errorOf([&] { ar->loss(PriorBatch{torch::full({4, 6}, 10, torch::kLong), randomIds(4, 45), {}}, gen); });
  EXPECT_NE(msg.find("outside the codebook [0, 10)"), std::string::npos) << msg;
  auto flow = makePrior(smallConfig("flow"), continuousContext());
  msg = errorOf([&] { flow->loss(PriorBatch{torch::zeros({4, 4}, torch::kLong), randomIds(4, 45), {}}, gen); });
  EXPECT_NE(msg.find("the flow prior models continuous latents but latents are integer"), std::string::npos) << msg;
  msg = errorOf([&] { flow->loss(PriorBatch{torch::randn({4, 4, 5}), randomIds(4, 45), {}}, gen); });
  EXPECT_NE(msg.find("must be [batch, 4, 3]"), std::string::npos) << msg;
}

TEST(PriorConfig, StrictValidationAndRoundTrip) {
  using latentcell::core::applyOverrides;
  auto error = [](std::vector<std::string> overrides) {
    PriorConfig c;
    return errorOf([&] { applyOverrides(c, overrides); });
  };
  EXPECT_NE(error({"kind=diffusion"}).find("ar, mdlm, flow, jit"), std::string::npos);
  EXPECT_NE(error({"backbone.heads=5"}).find("multiple of heads"), std::string::npos);
  EXPECT_NE(error({"jit.prediction=y"}).find("jit.prediction"), std::string::npos);
  EXPECT_NE(error({"flow.solver=rk4"}).find("euler"), std::string::npos);
  EXPECT_NE(error({"mdlm.eps=0"}).find("mdlm.eps"), std::string::npos);
  EXPECT_NE(error({"flow.guidance_weights=[1, 2]"}).find("guidance_mode: additive"), std::string::npos);
  EXPECT_NE(error({"conditioning.external_embeddings=[esm.csv]"}).find("column=path"), std::string::npos);
  EXPECT_NE(error({"flow.stepz=3"}).find("stepz"), std::string::npos);
  EXPECT_NE(error({"kind=jit", "jit.seed_heads=3"}).find("must divide backbone.dim"), std::string::npos);

  PriorConfig c;
  applyOverrides(c, {"kind=jit", "jit.prediction=v", "jit.start=mixed", "flow.guidance_mode=additive",
                     "flow.guidance_weights=[1, 0.5]", "conditioning.external_embeddings=[perturbation=esm.csv]"});
  PriorConfig back;
  latentcell::core::loadConfigText(back, latentcell::core::dumpConfig(c), "dump");
  EXPECT_EQ(latentcell::core::dumpConfig(back), latentcell::core::dumpConfig(c));
  EXPECT_EQ(back.jit.start, "mixed");
  EXPECT_EQ(back.flow.guidance_weights, (std::vector<double>{1, 0.5}));
}

TEST(PriorFactory, ConditionColumnsFromVocabulariesAndExternalTables) {
  latentcell::test::TempDir dir;
  std::ofstream(dir.file("esm.csv")) << "g1,1,2\ng2,3,4\n";
  std::vector<latentcell::data::Vocabulary> vocabs{{"cell_type", "", {"a", "b"}},
                                                   {"perturbation", "ctrl", {"ctrl", "g1", "g2"}}};
  ConditioningConfig c;
  c.external_embeddings = {"perturbation=" + dir.file("esm.csv")};
  auto msg = errorOf([&] { conditionColumns(c, vocabs); });
  EXPECT_NE(msg.find("ctrl"), std::string::npos) << msg;
  c.missing_as_null = true;
  auto columns = conditionColumns(c, vocabs);
  ASSERT_EQ(columns.size(), 2u);
  EXPECT_FALSE(columns[0].external.defined());
  ASSERT_TRUE(columns[1].external.defined());
  expectClose(columns[1].external[2], torch::tensor({3.0f, 4.0f}), 0, "g2's vector");
  EXPECT_EQ(columns[1].missing, (std::vector<uint8_t>{1, 0, 0}));
  c.external_embeddings = {"dose=" + dir.file("esm.csv")};
  msg = errorOf([&] { conditionColumns(c, vocabs); });
  EXPECT_NE(msg.find("'dose' is not a condition column (columns: cell_type, perturbation)"), std::string::npos) << msg;
}
