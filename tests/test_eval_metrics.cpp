// Tests for eval/DistributionMetrics: hand-computable cases in pure C++ (transport between point
// masses, identities of MMD/FD/energy, PCA on a line), and agreement with independent references
// computed in the same run by tests/python/eval_reference.py (POT ot.emd2, CFGen's MMD formula in
// numpy, scipy sqrtm for FD, cell-eval's edistance, numpy SVD with sklearn's sign flip).
#include "eval/DistributionMetrics.h"

#include "TestUtil.h"
#include "core/Safetensors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>

namespace {

using namespace latentcell::eval;

at::Tensor points(std::initializer_list<double> values, int64_t dim) {
  return torch::tensor(std::vector<double>(values), torch::kDouble).reshape({-1, dim});
}

double relError(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-300);
}

// Max relative error of got against want, relative to want's largest magnitude (so entries near
// zero in a projection do not dominate).
double tensorRelError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.cpu().to(at::kDouble), w = want.to(at::kDouble);
  return (g - w).abs().max().item<double>() / w.abs().max().item<double>();
}

TEST(Transport, PointMassesAreTheirDistance) {
  EXPECT_DOUBLE_EQ(wasserstein1(points({1, 2}, 2), points({4, 6}, 2)), 5.0);
  EXPECT_DOUBLE_EQ(wasserstein2(points({1, 2}, 2), points({4, 6}, 2)), 5.0);
  // A point mass against a set: every unit of mass travels from the point.
  EXPECT_NEAR(wasserstein1(points({0, 0}, 2), points({3, 4, 0, 1, -6, 8}, 2)), (5.0 + 1.0 + 10.0) / 3.0,
              1e-15);
}

TEST(Transport, IdenticalSetsCostNothing) {
  at::Tensor x = torch::randn({37, 4}, torch::kDouble);
  EXPECT_NEAR(wasserstein1(x, x), 0.0, 1e-15);
  EXPECT_NEAR(wasserstein2(x, x), 0.0, 1e-15);
  // A permutation of the rows is the same empirical measure.
  EXPECT_NEAR(wasserstein2(x, x.flip(0)), 0.0, 1e-15);
}

TEST(Transport, UnequalSizesSplitMass) {
  // 1-D: F - G is 1/6 on [0, 3), so W1 = 0.5, and W2^2 = 1/6 * 3^2.
  at::Tensor x = points({0, 0, 3}, 1), y = points({0, 3}, 1);
  EXPECT_NEAR(wasserstein1(x, y), 0.5, 1e-15);
  EXPECT_NEAR(wasserstein2(x, y), std::sqrt(1.5), 1e-15);
  // Shifting one set moves every unit of mass by the shift (W1 and W2 in 1-D).
  EXPECT_NEAR(wasserstein1(points({0, 1}, 1), points({10, 11}, 1)), 10.0, 1e-14);
  EXPECT_NEAR(wasserstein2(points({0, 1}, 1), points({10, 11}, 1)), 10.0, 1e-14);
}

TEST(Transport, ExactCostOfAGivenMatrix) {
  // Assignment problem: the optimum picks the anti-diagonal (1 + 1) / 2.
  at::Tensor cost = torch::tensor({5.0, 1.0, 1.0, 5.0}, torch::kDouble).reshape({2, 2});
  EXPECT_DOUBLE_EQ(exactTransportCost(cost), 1.0);
  EXPECT_THROW(exactTransportCost(torch::tensor({std::nan(""), 1.0}).reshape({1, 2})), std::invalid_argument);
}

TEST(Mmd, BiasedIsZeroForIdenticalSetsAndTruncates) {
  at::Tensor x = torch::randn({30, 5}, torch::kDouble);
  EXPECT_NEAR(mmdRbfBiased(x, x), 0.0, 1e-12);
  // CFGen compares the first min(n, m) rows: extra rows of y are ignored.
  EXPECT_NEAR(mmdRbfBiased(x, torch::cat({x, torch::randn({10, 5}, torch::kDouble)})), 0.0, 1e-12);
}

TEST(Mmd, SinglePointsByHand) {
  // n = 1: k(0) + k(0) - 2 k(d) with k(d) = exp(-d^2 / 2) for sigma = 1.
  const double d = 1.7;
  EXPECT_NEAR(mmdRbfBiased(points({0}, 1), points({d}, 1), {1.0}), 2.0 - 2.0 * std::exp(-d * d / 2.0),
              1e-15);
  // Unbiased, two points each at 0 and d: within-set pairs are the off-diagonal ones only.
  const double k = std::exp(-d * d / 2.0);
  EXPECT_NEAR(mmdRbfUnbiased(points({0, d}, 1), points({0, d}, 1), {1.0}),
              k + k - 2.0 * (2.0 + 2.0 * k) / 4.0, 1e-15);
  EXPECT_THROW(mmdRbfBiased(points({0}, 1), points({1}, 1), {0.0}), std::invalid_argument);
}

TEST(Frechet, ShiftedCopyIsTheSquaredShift) {
  at::Tensor x = torch::randn({200, 6}, torch::kDouble);
  EXPECT_NEAR(frechetDistance(x, x), 0.0, 1e-10);
  at::Tensor shift = torch::tensor({1.0, -2.0, 0.5, 0.0, 3.0, -1.0}, torch::kDouble);
  EXPECT_NEAR(frechetDistance(x, x + shift), shift.square().sum().item<double>(), 1e-9);
}

TEST(Frechet, SamplesOfOneGaussianAreClose) {
  torch::manual_seed(3);
  at::Tensor a = torch::randn({20000, 4}, torch::kDouble), b = torch::randn({20000, 4}, torch::kDouble);
  const double fd = frechetDistance(a, b);
  EXPECT_GE(fd, -1e-12);
  EXPECT_LT(fd, 0.01);
}

TEST(Energy, ByHand) {
  EXPECT_DOUBLE_EQ(energyDistance(points({0}, 1), points({1}, 1)), 2.0);
  // E|X-Y| = 1; E|X-X'| = 1 (V) or 2 (U); E|Y-Y'| = 0.
  EXPECT_DOUBLE_EQ(energyDistance(points({0, 2}, 1), points({1}, 1)), 1.0);
  EXPECT_DOUBLE_EQ(energyDistance(points({0, 2}, 1), points({1, 1}, 1), EnergyEstimator::UStatistic),
                   0.0);
  at::Tensor x = torch::randn({25, 3}, torch::kDouble);
  EXPECT_NEAR(energyDistance(x, x), 0.0, 1e-14);
}

TEST(Pca, LineIsOneComponentWithPositivePivot) {
  // Cells on the line c + t v: the first component is -v (its largest entry, -0.8 -> +0.8) and
  // projections are the centred t with the matching sign.
  at::Tensor v = torch::tensor({0.6, -0.8}, torch::kDouble);
  at::Tensor t = torch::tensor({-2.0, 0.0, 1.0, 4.0}, torch::kDouble);
  at::Tensor x = t.unsqueeze(1) * v + torch::tensor({3.0, 1.0}, torch::kDouble);
  Pca pca = fitPca(x, 1);
  EXPECT_TRUE(torch::allclose(pca.components[0], -v, 0.0, 1e-14));
  EXPECT_TRUE(torch::allclose(pca.transform(x).squeeze(1), -(t - t.mean()), 0.0, 1e-13));
  EXPECT_NEAR(pca.explainedVariance[0].item<double>(), (t - t.mean()).square().sum().item<double>() / 3.0,
              1e-13);
  EXPECT_THROW(fitPca(x, 3), std::invalid_argument);
  EXPECT_THROW(pca.transform(torch::zeros({2, 3})), std::invalid_argument);
}

TEST(Metrics, RejectBadInputs) {
  at::Tensor x = torch::randn({5, 3}, torch::kDouble);
  EXPECT_THROW(wasserstein1(x, torch::randn({5, 4})), std::invalid_argument);
  EXPECT_THROW(mmdRbfBiased(x, torch::full({2, 3}, NAN)), std::invalid_argument);
  EXPECT_THROW(frechetDistance(x, x.slice(0, 0, 1)), std::invalid_argument);
  EXPECT_THROW(energyDistance(torch::randn({3}), x), std::invalid_argument);
}

TEST(Metrics, FloatInputsAreComputedInDouble) {
  at::Tensor x = torch::randn({20, 3}, torch::kDouble), y = torch::randn({15, 3}, torch::kDouble) + 1.0;
  at::Tensor xf = x.to(torch::kFloat), yf = y.to(torch::kFloat);
  EXPECT_DOUBLE_EQ(wasserstein2(xf, yf), wasserstein2(xf.to(torch::kDouble), yf.to(torch::kDouble)));
  EXPECT_DOUBLE_EQ(mmdRbfUnbiased(xf, yf), mmdRbfUnbiased(xf.to(torch::kDouble), yf.to(torch::kDouble)));
}

// One run of the reference script; every case is checked in this one test because the script
// costs a Python start-up.
TEST(MetricsReference, MatchPotScipyAndNumpy) {
  LATENTCELL_REQUIRE_PYTHON();
  latentcell::test::TempDir dir;
  const std::string file = dir.file("metrics.safetensors");
  ASSERT_EQ(latentcell::test::runPython("tests/python/eval_reference.py", "metrics '" + file + "'"), 0);
  const auto ref = latentcell::core::loadSafetensors(file);
  auto value = [&](const std::string& name) { return ref.at(name).to(at::kDouble).item<double>(); };

  double worst = 0.0;
  for (const std::string name : {"gauss", "grid", "wide", "line"}) {
    SCOPED_TRACE("case " + name);
    const at::Tensor& x = ref.at(name + ".x");
    const at::Tensor& y = ref.at(name + ".y");
    const std::pair<std::string, double> got[] = {
        {"w1", wasserstein1(x, y)},
        {"w2", wasserstein2(x, y)},
        {"mmd_biased", mmdRbfBiased(x, y)},
        {"mmd_unbiased", mmdRbfUnbiased(x, y)},
        {"mmd_biased_custom", mmdRbfBiased(x, y, {0.5, 2.0})},
        {"fd", frechetDistance(x, y)},
        {"energy_v", energyDistance(x, y)},
        {"energy_u", energyDistance(x, y, EnergyEstimator::UStatistic)},
    };
    for (const auto& [metric, g] : got) {
      const double want = value(name + "." + metric), err = relError(g, want);
      std::printf("  %-6s %-18s got %.17g want %.17g rel %.2e\n", name.c_str(), metric.c_str(), g,
                  want, err);
      EXPECT_LT(err, 1e-8) << metric << ": got " << g << " want " << want;
      worst = std::max(worst, err);
    }
  }
  std::printf("  worst relative error over the metric cases: %.2e\n", worst);

  Pca pca = fitPca(ref.at("pca.real"), ref.at("pca.k").item<int64_t>());
  const std::pair<std::string, at::Tensor> pcaGot[] = {
      {"pca.mean", pca.mean},
      {"pca.components", pca.components},
      {"pca.explained_variance", pca.explainedVariance},
      {"pca.proj_real", pca.transform(ref.at("pca.real"))},
      {"pca.proj_gen", pca.transform(ref.at("pca.gen"))},
  };
  for (const auto& [name, g] : pcaGot) {
    const double err = tensorRelError(g, ref.at(name));
    std::printf("  %-24s max error / max |want| %.2e\n", name.c_str(), err);
    EXPECT_LT(err, 1e-10) << name;
  }
}

}  // namespace
