// Tests for eval/DistributionMetrics and eval/DistributionSuite: hand-computable cases in pure C++
// (transport between point masses, identities of MMD/FD/energy, PCA on a line), agreement with
// independent references computed in the same run by tests/python/eval_reference.py (POT ot.emd2,
// CFGen's MMD formula in numpy, scipy sqrtm for FD, cell-eval's edistance, numpy SVD with sklearn's
// sign flip), and the whole scLDM/CFGen protocol (distribution.csv) against scanpy + sklearn + POT +
// scipy in tests/python/eval_protocols_reference.py.
#include "eval/DistributionMetrics.h"
#include "eval/DistributionSuite.h"
#include "eval/Parallel.h"

#include "TestUtil.h"
#include "core/Safetensors.h"
#include "data/H5ad.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

TEST(Energy, MeanPairwiseDistanceBothWays) {
  // 3-4-5 triangles: the distances from (0, 0) to (3, 4) and (6, 8) average 7.5.
  for (auto how : {DistanceComputation::Exact, DistanceComputation::MatrixProduct})
    EXPECT_NEAR(meanPairwiseDistance(points({0, 0}, 2), points({3, 4, 6, 8}, 2), how), 7.5, 1e-12);
  // In many dimensions the matrix product agrees with exact differences to ~sqrt(eps) |x|.
  at::Tensor x = torch::rand({70, 2000}, torch::kDouble) * 3.0, y = torch::rand({90, 2000}, torch::kDouble) * 3.0;
  const double exact = meanPairwiseDistance(x, y), mm = meanPairwiseDistance(x, y, DistanceComputation::MatrixProduct);
  EXPECT_LT(relError(mm, exact), 1e-10);
  EXPECT_NEAR(meanPairwiseDistance(x, x, DistanceComputation::MatrixProduct), meanPairwiseDistance(x, x), 1e-6);
}

TEST(ParallelFor, EveryItemOnceAndTheLowestFailingItemsError) {
  for (int threads : {0, 1, 3, 64}) {
    std::vector<std::atomic<int>> hits(100);
    parallelFor(100, threads, [&](int64_t i) { ++hits[size_t(i)]; });
    for (const auto& h : hits) EXPECT_EQ(h.load(), 1) << threads << " threads";
  }
  // Items 0 and 1 both fail: item 0's error is the one reported, whichever thread fails first.
  for (int repeat = 0; repeat < 20; ++repeat) {
    const std::string err = latentcell::test::errorOf([] {
      parallelFor(2, 2, [](int64_t i) { throw std::invalid_argument("item " + std::to_string(i)); });
    });
    EXPECT_EQ(err, "item 0");
  }
  parallelFor(0, 4, [](int64_t) { FAIL() << "no items, no calls"; });
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

  for (const PcaSolver solver : {PcaSolver::Svd, PcaSolver::CovarianceEigh}) {
    SCOPED_TRACE(solver == PcaSolver::Svd ? "svd" : "covariance eigh");
    Pca pca = fitPca(ref.at("pca.real"), ref.at("pca.k").item<int64_t>(), solver);
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
}

TEST(Pca, SolversAgreeOnTallData) {
  // 600 x 300 with a decaying spectrum: Auto picks the covariance path; both give one answer.
  torch::manual_seed(5);
  at::Tensor scales = torch::exp(torch::linspace(0.0, -6.0, 300, torch::kDouble));
  at::Tensor x = torch::randn({600, 300}, torch::kDouble) * scales + 2.0;
  const Pca svd = fitPca(x, 30, PcaSolver::Svd), eigh = fitPca(x, 30, PcaSolver::CovarianceEigh);
  const Pca automatic = fitPca(x, 30);
  EXPECT_LT(tensorRelError(eigh.components, svd.components), 1e-9);
  EXPECT_LT(tensorRelError(eigh.transform(x), svd.transform(x)), 1e-9);
  EXPECT_LT(tensorRelError(eigh.explainedVariance, svd.explainedVariance), 1e-12);
  EXPECT_TRUE(torch::equal(automatic.components, eigh.components));
  // More rows than one block (4096), float32 input, blocks summed on 3 threads.
  at::Tensor tall = (torch::randn({9000, 40}, torch::kDouble) * scales.slice(0, 0, 40) + 1.0).to(torch::kFloat);
  const Pca blocked = fitPca(tall, 10, PcaSolver::CovarianceEigh, 3), exact = fitPca(tall, 10, PcaSolver::Svd);
  EXPECT_LT(tensorRelError(blocked.transform(tall), exact.transform(tall)), 1e-9);
  EXPECT_LT(tensorRelError(blocked.mean, exact.mean), 1e-12);
}

// ---- the scLDM / CFGen protocol (eval/DistributionSuite) -------------------------------------------

std::vector<std::vector<std::string>> readCsv(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "missing " << path;
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (!line.empty() && line.back() == ',') f.push_back("");
    rows.push_back(f);
  }
  return rows;
}

// Labels and cell counts equal, the five metrics within `tol` relative (acceptance: 1e-4).
void expectSameDistributionCsv(const std::string& ours, const std::string& ref, double tol, const std::string& label) {
  const auto a = readCsv(ours), b = readCsv(ref);
  ASSERT_EQ(a.size(), b.size()) << label;
  ASSERT_EQ(a[0], b[0]) << label << " header";
  const size_t labels = b[0].size() - 5;  // [celltype,] perturbation, n_real, n_pred
  double worst = 0;
  for (size_t r = 1; r < b.size(); ++r) {
    for (size_t c = 0; c < labels; ++c) EXPECT_EQ(a[r][c], b[r][c]) << label << " row " << r;
    for (size_t c = labels; c < b[r].size(); ++c) {
      const double x = std::stod(a[r][c]), y = std::stod(b[r][c]), err = relError(x, y);
      worst = std::max(worst, err);
      EXPECT_LT(err, tol) << label << " " << b[0][c] << " row " << r << ": got " << x << " want " << y;
    }
  }
  std::printf("[%s] %zu rows, worst relative difference %.2e\n", label.c_str(), b.size() - 1, worst);
}

TEST(DistributionProtocol, MatchesScanpySklearnPotScipy) {
  LATENTCELL_REQUIRE_PYTHON();
  latentcell::test::TempDir dir;
  ASSERT_EQ(latentcell::test::runPython("tests/python/eval_protocols_reference.py",
                                        "distribution '" + dir.path().string() + "'"),
            0);
  // Through the library: 60 seurat_v3 genes of 150, 10 PCs, conditions within cell types.
  DistributionOptions o;
  o.pertCol = "target";
  o.celltypeCol = "celltype";
  o.topGenes = 60;
  o.components = 10;
  const auto report = evaluateDistribution(latentcell::data::readH5ad(dir.file("dist_real.h5ad")),
                                           latentcell::data::readH5ad(dir.file("dist_pred.h5ad")), o);
  EXPECT_TRUE(report.hvgSelected && report.realNormalised && report.predNormalised);
  EXPECT_EQ(report.genes, 60);
  writeDistributionCsv(report, true, dir.file("ours_hvg.csv"));
  expectSameDistributionCsv(dir.file("ours_hvg.csv"), dir.file("dist_hvg.csv"), 1e-4, "hvg, per cell type");

  // Through the command with its defaults (all 150 genes, 30 PCs) and a log1p prediction.
  const auto run = latentcell::test::runBinary(
      "evaluate --profile distribution --real '" + dir.file("dist_real.h5ad") + "' --pred '" +
      dir.file("dist_pred_log.h5ad") + "' --pert-col target --device cpu --outdir '" + dir.file("cli") + "'");
  ASSERT_EQ(run.status, 0) << run.out;
  expectSameDistributionCsv(dir.file("cli/distribution.csv"), dir.file("dist_default.csv"), 1e-4, "cli defaults");
}

latentcell::data::Column stringColumn(const std::vector<std::string>& v) {
  latentcell::data::Column c;
  c.kind = latentcell::data::Column::Kind::String;
  c.strings = v;
  return c;
}

// Counts of `cells` cells: control and perturbation "p" alternating.
latentcell::data::AnnData screen(int64_t cells, int64_t genes, uint64_t seed, const std::string& source) {
  torch::manual_seed(seed);
  at::Tensor x = torch::poisson(torch::full({cells, genes}, 2.0, torch::kDouble)).to(torch::kFloat);
  std::vector<std::vector<float>> rows(cells);
  std::vector<std::string> labels;
  for (int64_t i = 0; i < cells; ++i) {
    rows[i] = std::vector<float>(x[i].data_ptr<float>(), x[i].data_ptr<float>() + genes);
    labels.push_back(i % 2 ? "p" : "ctrl");
  }
  latentcell::data::AnnData a;
  a.X = latentcell::test::csrFromDense(rows);
  for (int64_t g = 0; g < genes; ++g) a.var.index.push_back("g" + std::to_string(g));
  for (int64_t i = 0; i < cells; ++i) a.obs.index.push_back(source + std::to_string(i));
  a.obs.columns = {{"target", stringColumn(labels)}};
  a.source = source + ".h5ad";
  return a;
}

TEST(DistributionProtocol, SubsampleIsSeededAndCapped) {
  DistributionOptions o;
  o.controlPert = "ctrl";
  o.components = 5;
  const auto real = screen(80, 12, 1, "real"), pred = screen(60, 12, 2, "pred");
  const auto all = evaluateDistribution(real, pred, o);
  ASSERT_EQ(all.rows.size(), 1u);
  EXPECT_EQ(all.rows[0].realCells, 40);
  EXPECT_EQ(all.rows[0].predCells, 30);
  o.maxCells = 12;
  const auto a = evaluateDistribution(real, pred, o), b = evaluateDistribution(real, pred, o);
  EXPECT_EQ(a.rows[0].realCells, 12);
  EXPECT_EQ(a.rows[0].predCells, 12);
  EXPECT_EQ(a.rows[0].w2, b.rows[0].w2);  // same seed, same subsample
  o.seed = 9;
  EXPECT_NE(evaluateDistribution(real, pred, o).rows[0].w2, a.rows[0].w2);
}

TEST(DistributionProtocol, Errors) {
  DistributionOptions o;
  o.controlPert = "ctrl";
  auto real = screen(20, 6, 1, "real"), pred = screen(20, 6, 2, "pred");
  auto other = pred;
  other.var.index[3] = "x";
  EXPECT_NE(latentcell::test::errorOf([&] { evaluateDistribution(real, other, o); })
                .find("var_names differ (6 vs 6 genes, first difference at gene 3)"),
            std::string::npos);
  auto missing = pred;
  missing.obs.columns[0].second.strings.assign(20, "ctrl");
  EXPECT_NE(latentcell::test::errorOf([&] { evaluateDistribution(real, missing, o); })
                .find("pred has no cells of target='p'"),
            std::string::npos);
  auto negative = pred;
  negative.X.data[0] = -0.5f;
  const std::string err = latentcell::test::errorOf([&] { evaluateDistribution(real, negative, o); });
  EXPECT_NE(err.find("has negative values (min -0.50)"), std::string::npos) << err;
}

}  // namespace
