// Tests for eval/DifferentialExpression: Mann-Whitney U and Benjamini-Hochberg on hand-computed
// examples (ties, zeros, negatives, -0.0, constant genes), pdex's fold-change conventions, and
// agreement with pdex 0.3.0 (called exactly as cell-eval 0.8.2 calls it) and with
// scipy.stats.mannwhitneyu / false_discovery_control on data rich in ties and zeros, run in the
// same test by tests/python/eval_reference.py.
#include "eval/DifferentialExpression.h"

#include "TestUtil.h"
#include "core/Safetensors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

namespace {

using namespace latentcell::eval;

constexpr double kInf = std::numeric_limits<double>::infinity();

at::Tensor column(std::initializer_list<double> values) {
  return torch::tensor(std::vector<double>(values), torch::kDouble).unsqueeze(1);  // [cells, 1]
}

// The two-sided asymptotic p-value from U1, the tie term and the group sizes, written out.
double mwuPValue(double u1, double tieTerm, double n1, double n2) {
  const double n = n1 + n2, mu = n1 * n2 / 2.0;
  const double s = std::sqrt(n1 * n2 / 12.0 * ((n + 1.0) - tieTerm / (n * (n - 1.0))));
  const double z = (std::max(u1, n1 * n2 - u1) - mu - 0.5) / s;
  return std::min(1.0, std::erfc(z / std::sqrt(2.0)));
}

// Max over entries of |got - want| / max(|want|, floor); infinities must match exactly.
double maxRelError(const at::Tensor& got, const at::Tensor& want, double floor = 1e-300) {
  const at::Tensor g = got.cpu().to(at::kDouble).flatten(), w = want.to(at::kDouble).flatten();
  EXPECT_EQ(g.numel(), w.numel());
  double worst = 0.0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double a = g[i].item<double>(), b = w[i].item<double>();
    if (std::isinf(b) || std::isinf(a)) {
      if (a != b) return kInf;
      continue;
    }
    worst = std::max(worst, std::abs(a - b) / std::max(std::abs(b), floor));
  }
  return worst;
}

TEST(MannWhitney, HandComputedWithTies) {
  // Target {1, 2, 3} vs reference {2, 4}: pairs target > reference: (3, 2); tied: (2, 2).
  // U1 = 1 + 0.5; the pooled sample has one tie block of size 2 (tie term 2^3 - 2 = 6).
  MannWhitneyReference ref(column({2, 4}));
  MannWhitneyResult r = ref.test(column({1, 2, 3}));
  EXPECT_DOUBLE_EQ(r.statistic.item<double>(), 1.5);
  EXPECT_DOUBLE_EQ(r.pValue.item<double>(), mwuPValue(1.5, 6.0, 3, 2));
}

TEST(MannWhitney, ZerosNegativesAndSignedZero) {
  // Three genes, reference of 2 cells and target of 3:
  //   gene 0: target {0, 0, -1} vs {0, 5}: U1 = 0.5 + 0.5 (the zeros tie with the reference's 0);
  //           zero block of 3 -> tie term 24.
  //   gene 1: target {-0.0, 0, 0} vs {0, 0}: everything tied -> p = 1, U1 = n1 n2 / 2.
  //   gene 2: target {-2, -1, 7} vs {-1, 0}: (-1,-1) ties, (7,-1), (7,0) wins -> U1 = 2.5; tie 6.
  at::Tensor reference = torch::tensor({0.0, 0.0, -1.0, 5.0, 0.0, 0.0}, torch::kDouble).reshape({2, 3});
  at::Tensor target =
      torch::tensor({0.0, -0.0, -2.0, 0.0, 0.0, -1.0, -1.0, 0.0, 7.0}, torch::kDouble).reshape({3, 3});
  MannWhitneyResult r = MannWhitneyReference(reference).test(target);
  EXPECT_DOUBLE_EQ(r.statistic[0].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(r.pValue[0].item<double>(), mwuPValue(1.0, 24.0, 3, 2));
  EXPECT_DOUBLE_EQ(r.statistic[1].item<double>(), 3.0);
  EXPECT_DOUBLE_EQ(r.pValue[1].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(r.statistic[2].item<double>(), 2.5);
  EXPECT_DOUBLE_EQ(r.pValue[2].item<double>(), mwuPValue(2.5, 6.0, 3, 2));
}

TEST(MannWhitney, ConstantNonzeroGeneAndSingleCells) {
  MannWhitneyResult r = MannWhitneyReference(column({1.5, 1.5, 1.5})).test(column({1.5}));
  EXPECT_DOUBLE_EQ(r.statistic.item<double>(), 1.5);
  EXPECT_DOUBLE_EQ(r.pValue.item<double>(), 1.0);
  // One cell against one cell: U1 is 1 or 0, no ties.
  r = MannWhitneyReference(column({1.0})).test(column({2.0}));
  EXPECT_DOUBLE_EQ(r.statistic.item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(r.pValue.item<double>(), mwuPValue(1.0, 0.0, 1, 1));
}

TEST(MannWhitney, ValuesAreRankedAsFloat32) {
  // 1 + 1e-12 rounds to 1.0f, so the two values tie as they do in cell-eval's float32 matrices.
  MannWhitneyResult r = MannWhitneyReference(column({1.0})).test(column({1.0 + 1e-12}));
  EXPECT_DOUBLE_EQ(r.statistic.item<double>(), 0.5);
  EXPECT_DOUBLE_EQ(r.pValue.item<double>(), 1.0);
  EXPECT_THROW(MannWhitneyReference(column({NAN})), std::invalid_argument);
  EXPECT_THROW(MannWhitneyReference(column({1.0})).test(torch::zeros({2, 2})), std::invalid_argument);
}

TEST(BenjaminiHochberg, ScipyDocumentationExample) {
  // scipy.stats.false_discovery_control's docstring example (Benjamini & Hochberg 1995), shuffled.
  const std::vector<double> p = {0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344,
                                 0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000};
  const std::vector<double> q = {0.0015, 0.003, 0.0095, 0.035625, 0.0603, 0.06385714, 0.06385714,
                                 0.0645, 0.0765, 0.486, 0.58118182, 0.714875, 0.75323077,
                                 0.81321429, 1.0};
  at::Tensor perm = torch::randperm(15, torch::kLong);
  at::Tensor got = benjaminiHochberg(torch::tensor(p, torch::kDouble).index_select(0, perm));
  EXPECT_TRUE(torch::allclose(got, torch::tensor(q, torch::kDouble).index_select(0, perm), 0.0, 5e-9))
      << got;
}

TEST(BenjaminiHochberg, SmallByHandAndBatched) {
  // Sorted 0.01, 0.03, 0.04 -> 0.03, 0.045, 0.04 -> running minimum from the top: 0.03, 0.04, 0.04.
  at::Tensor p = torch::tensor({0.01, 0.04, 0.03, 0.5, 0.2, 0.2}, torch::kDouble).reshape({2, 3});
  at::Tensor q = benjaminiHochberg(p);
  EXPECT_TRUE(torch::allclose(q[0], torch::tensor({0.03, 0.04, 0.04}, torch::kDouble), 0.0, 1e-15));
  EXPECT_TRUE(torch::allclose(q[1], torch::tensor({0.5, 0.3, 0.3}, torch::kDouble), 0.0, 1e-15));
  EXPECT_DOUBLE_EQ(benjaminiHochberg(torch::tensor({0.2}, torch::kDouble)).item<double>(), 0.2);
  EXPECT_THROW(benjaminiHochberg(torch::tensor({0.1, std::nan("")})), std::invalid_argument);
}

TEST(DifferentialExpression, FoldChangeConventionsAndGrouping) {
  // Genes: 0 all zero (0/0 -> 0), 1 zero in control (x/0 -> +inf), 2 zero in the target (-inf).
  // Groups: control 7, target 3 (two cells), target -1 left out, interleaved.
  const double l2 = std::log1p(1.0), l4 = std::log1p(3.0);
  at::Tensor x = torch::tensor({0.0, 0.0, l2,    //  control
                                0.0, l4, 0.0,    //  target 3
                                0.0, 9.0, 9.0,   //  left out
                                0.0, 0.0, l4,    //  control
                                0.0, l2, 0.0},   //  target 3
                               torch::kDouble)
                     .reshape({5, 3});
  at::Tensor groups = torch::tensor({7, 3, -1, 7, 3}, torch::kLong);
  DeResult de = differentialExpression(x, groups, 7);
  ASSERT_EQ(de.targets.numel(), 1);
  EXPECT_EQ(de.targets[0].item<int64_t>(), 3);
  EXPECT_EQ(de.targetMembership[0].item<int64_t>(), 2);
  EXPECT_EQ(de.referenceMembership, 2);
  // Geometric means in count space: expm1(mean(log1p)) = sqrt(2 * 4) - 1 (float32-rounded input).
  const double geo = std::expm1((double(float(l2)) + double(float(l4))) / 2.0);
  EXPECT_NEAR(de.targetMean[0][1].item<double>(), geo, 1e-15);
  EXPECT_NEAR(de.referenceMean[2].item<double>(), geo, 1e-15);
  EXPECT_EQ(de.log2FoldChange[0][0].item<double>(), 0.0);
  EXPECT_EQ(de.percentChange[0][0].item<double>(), 0.0);
  EXPECT_EQ(de.log2FoldChange[0][1].item<double>(), kInf);
  EXPECT_EQ(de.percentChange[0][1].item<double>(), kInf);
  EXPECT_EQ(de.log2FoldChange[0][2].item<double>(), -kInf);
  EXPECT_EQ(de.percentChange[0][2].item<double>(), -1.0);
  EXPECT_EQ(de.pValue[0][0].item<double>(), 1.0);
  EXPECT_EQ(de.statistic[0][0].item<double>(), 2.0);

  // pdex's epsilon pseudocount makes one-sided zeros finite.
  DeResult eps = differentialExpression(x, groups, 7, {.isLog1p = true, .epsilon = 0.5});
  EXPECT_NEAR(eps.log2FoldChange[0][1].item<double>(), std::log2((geo + 0.5) / 0.5), 1e-14);

  EXPECT_THROW(differentialExpression(x, groups, 5), std::invalid_argument);
  EXPECT_THROW(differentialExpression(x, groups.to(torch::kDouble), 7), std::invalid_argument);
  EXPECT_THROW(differentialExpression(x.clone().index_put_({0, 0}, NAN), groups, 7), std::invalid_argument);
}

// Targets tested on several threads (eval/Parallel.h) give the serial result bit for bit.
TEST(DifferentialExpression, ThreadedTargetsMatchSerial) {
  torch::manual_seed(11);
  const at::Tensor x = torch::log1p(torch::poisson(torch::full({300, 50}, 1.5, torch::kDouble)));  // ties, zeros
  const at::Tensor groups = torch::randint(-1, 7, {300}, torch::kLong);
  DeOptions threaded;
  threaded.threads = 3;
  const DeResult serial = differentialExpression(x, groups, 0);
  const DeResult parallel = differentialExpression(x, groups, 0, threaded);
  EXPECT_TRUE(torch::equal(serial.targets, parallel.targets));
  EXPECT_TRUE(torch::equal(serial.statistic, parallel.statistic));
  EXPECT_TRUE(torch::equal(serial.pValue, parallel.pValue));
  EXPECT_TRUE(torch::equal(serial.fdr, parallel.fdr));
  EXPECT_TRUE(torch::equal(serial.log2FoldChange, parallel.log2FoldChange));
}

// The CSR engine gives the dense engine's tables: the same U and tie integers (so bit-equal statistic
// and p-values) on values rich in ties, with negatives, -0.0, stored zeros, an all-zero gene, a gene
// without zeros and left-out cells, serially and on several threads; its errors name the problem.
TEST(DifferentialExpression, SparseMatchesDense) {
  torch::manual_seed(5);
  // 150 genes: several of the engine's gene blocks (64).
  at::Tensor x = torch::log1p(torch::poisson(torch::full({400, 150}, 1.2, torch::kFloat)));  // ties, zeros
  x.slice(1, 0, 5) *= -1.0;                    // negative values tie around the zero block
  x.select(1, 5).zero_();                      // all zero
  x.select(1, 6).fill_(2.5);                   // constant, no zeros
  x.index_put_({0, 7}, -0.0f);                 // -0.0 is a zero
  x.index_put_({399, 149}, 0.0f);              // stored explicitly below
  at::Tensor groups = torch::randint(-1, 9, {400}, torch::kLong);
  std::vector<std::vector<float>> rows(400);
  for (int64_t r = 0; r < 400; ++r) rows[size_t(r)] = std::vector<float>(x[r].data_ptr<float>(), x[r].data_ptr<float>() + 150);
  latentcell::data::CsrMatrix csr = latentcell::test::csrFromDense(rows);
  csr.indices.push_back(149), csr.data.push_back(0.0f);  // a stored zero at the end of the last row
  ++csr.indptr.back();
  const std::vector<int64_t> ids(groups.data_ptr<int64_t>(), groups.data_ptr<int64_t>() + 400);
  const DeResult dense = differentialExpression(x, groups, 3);
  for (int threads : {1, 3}) {
    DeOptions options;
    options.threads = threads;
    const DeResult sparse = differentialExpressionSparse(csr, ids, 3, options);
    EXPECT_TRUE(torch::equal(dense.targets, sparse.targets));
    EXPECT_TRUE(torch::equal(dense.targetMembership, sparse.targetMembership));
    EXPECT_EQ(dense.referenceMembership, sparse.referenceMembership);
    EXPECT_TRUE(torch::equal(dense.statistic, sparse.statistic));
    EXPECT_TRUE(torch::equal(dense.pValue, sparse.pValue));
    EXPECT_TRUE(torch::equal(dense.fdr, sparse.fdr));
    EXPECT_LT(maxRelError(sparse.targetMean, dense.targetMean), 1e-13);
    EXPECT_LT(maxRelError(sparse.referenceMean, dense.referenceMean), 1e-13);
    EXPECT_LT(maxRelError(sparse.log2FoldChange, dense.log2FoldChange, 1e-12), 1e-11);
  }
  EXPECT_THROW(differentialExpressionSparse(csr, ids, 42), std::invalid_argument);  // no such control
  EXPECT_THROW(differentialExpressionSparse(csr, {1, 2}, 3), std::invalid_argument);  // one id per row
  csr.data[0] = NAN;
  EXPECT_THROW(differentialExpressionSparse(csr, ids, 3), std::invalid_argument);
}

TEST(DifferentialExpression, CudaMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(0);
  at::Tensor x = at::log1p(torch::poisson(torch::full({300, 50}, 0.7, torch::kDouble)));
  at::Tensor groups = torch::randint(-1, 6, {300}, torch::kLong);
  DeResult cpu = differentialExpression(x, groups, 0);
  DeResult gpu = differentialExpression(x.cuda(), groups.cuda(), 0);
  EXPECT_TRUE(torch::equal(cpu.statistic, gpu.statistic.cpu()));
  EXPECT_TRUE(torch::allclose(cpu.pValue, gpu.pValue.cpu(), 1e-12, 0.0));
  EXPECT_TRUE(torch::allclose(cpu.fdr, gpu.fdr.cpu(), 1e-12, 0.0));
  EXPECT_TRUE(torch::allclose(cpu.targetMean, gpu.targetMean.cpu(), 1e-12, 0.0));
}

// One run of the reference script (pdex's numba kernels compile for ~15 s), all checks here.
TEST(DifferentialExpressionReference, MatchesPdexAndScipy) {
  LATENTCELL_REQUIRE_PYTHON();
  latentcell::test::TempDir dir;
  const std::string file = dir.file("de.safetensors");
  ASSERT_EQ(latentcell::test::runPython("tests/python/eval_reference.py", "de '" + file + "' 2>/dev/null"),
            0);
  const auto ref = latentcell::core::loadSafetensors(file);
  const at::Tensor& x = ref.at("x");
  const int64_t control = ref.at("control").item<int64_t>();
  DeResult de = differentialExpression(x, ref.at("groups"), control);

  ASSERT_TRUE(torch::equal(de.targets, ref.at("targets")));
  EXPECT_TRUE(torch::equal(de.targetMembership, ref.at("pdex.target_membership")));
  EXPECT_EQ(de.referenceMembership, ref.at("pdex.ref_membership")[0].item<int64_t>());

  auto check = [](const char* what, const at::Tensor& got, const at::Tensor& want, double tol,
                  double floor = 1e-300) {
    const double err = maxRelError(got, want, floor);
    std::printf("  %-34s max rel error %.2e (tolerance %.0e)\n", what, err, tol);
    EXPECT_LE(err, tol) << what;
  };
  const at::Tensor refMean = de.referenceMean.unsqueeze(0).expand_as(de.targetMean);
  // The test statistics come from exact integer ranks: they must agree to rounding.
  check("statistic vs scipy", de.statistic, ref.at("scipy.statistic"), 0.0);
  check("statistic vs pdex", de.statistic, ref.at("pdex.statistic"), 0.0);
  check("p_value vs scipy", de.pValue, ref.at("scipy.p_value"), 1e-12);
  check("p_value vs pdex", de.pValue, ref.at("pdex.p_value"), 1e-12);
  check("fdr vs scipy", de.fdr, ref.at("scipy.fdr"), 1e-12);
  check("fdr vs pdex", de.fdr, ref.at("pdex.fdr"), 1e-12);
  // Pseudobulks: float64 here and in numpy; pdex averages in float32 (numpy's float32 mean), so
  // it is only float32-close, and log fold changes near 0 are compared absolutely.
  check("target_mean vs numpy float64", de.targetMean, ref.at("numpy.target_mean"), 1e-13);
  check("ref_mean vs numpy float64", de.referenceMean, ref.at("numpy.ref_mean"), 1e-13);
  check("log2_fold_change vs numpy float64", de.log2FoldChange, ref.at("numpy.log2_fold_change"), 1e-12,
        1e-3);
  check("percent_change vs numpy float64", de.percentChange, ref.at("numpy.percent_change"), 1e-12, 1e-3);
  check("target_mean vs pdex (float32)", de.targetMean, ref.at("pdex.target_mean"), 1e-6);
  check("ref_mean vs pdex (float32)", refMean, ref.at("pdex.ref_mean"), 1e-6);
  check("log2_fold_change vs pdex (float32)", de.log2FoldChange, ref.at("pdex.log2_fold_change"), 1e-5,
        1.0);
  check("percent_change vs pdex (float32)", de.percentChange, ref.at("pdex.percent_change"), 1e-5, 1.0);

  // is_log1p = False (cell-eval's allow_discrete): expm1(mean(log1p(x))), on |x|.
  DeResult counts = differentialExpression(x.abs(), ref.at("groups"), control, {.isLog1p = false});
  check("counts: target_mean vs pdex", counts.targetMean, ref.at("pdex_counts.target_mean"), 1e-12);
  check("counts: log2_fold_change vs pdex", counts.log2FoldChange,
        ref.at("pdex_counts.log2_fold_change"), 1e-12, 1.0);
  check("counts: p_value vs pdex", counts.pValue, ref.at("pdex_counts.p_value"), 1e-12);
}

}  // namespace
