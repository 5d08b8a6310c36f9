// Tests for data/Simulator: determinism by seed, shapes and obs/var/varm layout, whole non-negative
// counts, negative-binomial moments of a gene (mean mu, variance mu + mu^2 / theta) on a large sample,
// recovery of a perturbation's true log fold change from the simulated means, and the h5ad written by
// `latentcell simulate` (read back here and by anndata, tests/python/check_simulated.py).
#include "data/Simulator.h"

#include "TestUtil.h"
#include "data/H5ad.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include <fmt/format.h>
#include <sys/wait.h>
#include <nlohmann/json.hpp>

using namespace latentcell::data;

namespace {

SimulatorOptions small(uint64_t seed) {
  SimulatorOptions o;
  o.cells = 300;
  o.genes = 50;
  o.cell_types = 3;
  o.perturbations = 4;
  o.batches = 2;
  o.seed = seed;
  return o;
}

// Mean count of each gene over the cells where keep(c) holds.
std::vector<double> geneMeans(const AnnData& ad, const std::function<bool(int64_t)>& keep, int64_t* n_out = nullptr) {
  std::vector<double> sum(ad.n_vars(), 0.0);
  int64_t n = 0;
  for (int64_t c = 0; c < ad.n_obs(); ++c) {
    if (!keep(c)) continue;
    ++n;
    for (int64_t k = ad.X.indptr[c]; k < ad.X.indptr[c + 1]; ++k) sum[ad.X.indices[k]] += ad.X.data[k];
  }
  for (double& s : sum) s /= static_cast<double>(n);
  if (n_out) *n_out = n;
  return sum;
}

}  // namespace

TEST(Simulator, SameSeedSameDataDifferentSeedDiffers) {
  const AnnData a = simulate(small(3)), b = simulate(small(3)), c = simulate(small(4));
  EXPECT_EQ(a.X.indptr, b.X.indptr);
  EXPECT_EQ(a.X.indices, b.X.indices);
  EXPECT_EQ(a.X.data, b.X.data);
  EXPECT_EQ(a.obs.at("perturbation", "obs").codes, b.obs.at("perturbation", "obs").codes);
  EXPECT_EQ(a.varm.at("true_lfc").values, b.varm.at("true_lfc").values);
  EXPECT_EQ(a.uns_strings.at("simulator"), b.uns_strings.at("simulator"));
  EXPECT_NE(a.X.data, c.X.data);
  EXPECT_NE(a.varm.at("true_lfc").values, c.varm.at("true_lfc").values);
  // A cell's counts depend on the seed and its index only: more cells leave the first ones unchanged.
  SimulatorOptions more = small(3);
  more.cells = 400;
  const AnnData d = simulate(more);
  EXPECT_EQ(std::vector<float>(d.X.data.begin(), d.X.data.begin() + a.X.nnz()), a.X.data);
}

TEST(Simulator, GoldenCountsPinTheStream) {
  // Pins the generator so that a change in any draw (and so in every file made with a seed) shows.
  SimulatorOptions o = small(11);
  o.cells = 4;
  o.genes = 6;
  const AnnData a = simulate(o);
  std::string got;
  for (float v : a.X.data) got += fmt::format("{} ", v);
  for (int32_t c : a.obs.at("perturbation", "obs").codes) got += fmt::format("p{} ", c);
  // Taken from the first run on x86-64 Linux (glibc); any machine must produce the same.
  EXPECT_EQ(got, "67 646 233 1879 29 687 68 355 11 212 25 225 59 596 14 271 10 409 62 363 341 14 36 619 p1 p4 p1 p1 ");
}

TEST(Simulator, LayoutAndCategories) {
  const AnnData a = simulate(small(1));
  EXPECT_EQ(a.n_obs(), 300);
  EXPECT_EQ(a.n_vars(), 50);
  EXPECT_EQ(a.X.indptr.size(), 301u);
  EXPECT_EQ(a.obs.index[0], "cell_0");
  EXPECT_EQ(a.var.index[49], "gene_49");
  const Column& type = a.obs.at("cell_type", "obs");
  const Column& pert = a.obs.at("perturbation", "obs");
  const Column& batch = a.obs.at("batch", "obs");
  for (const Column* c : {&type, &pert, &batch}) {
    EXPECT_EQ(c->kind, Column::Kind::Categorical);
    EXPECT_EQ(c->size(), 300);
  }
  EXPECT_EQ(type.categories, (std::vector<std::string>{"type_0", "type_1", "type_2"}));
  EXPECT_EQ(pert.categories, (std::vector<std::string>{"control", "pert_0", "pert_1", "pert_2", "pert_3"}));
  EXPECT_EQ(batch.categories, (std::vector<std::string>{"batch_0", "batch_1"}));
  std::vector<int> seen(5, 0);
  for (int32_t code : pert.codes) {
    ASSERT_GE(code, 0);
    ASSERT_LT(code, 5);
    seen[code]++;
  }
  for (int k = 0; k < 5; ++k) EXPECT_GT(seen[k], 30) << "category " << k;  // about 60 each
  EXPECT_EQ(a.varm.at("true_lfc").rows, 50);
  EXPECT_EQ(a.varm.at("true_lfc").cols, 4);
  EXPECT_EQ(a.varm.at("true_lfc_by_type").cols, 12);
  EXPECT_EQ(a.varm.at("cell_type_program").cols, 3);
  EXPECT_EQ(a.varm.at("batch_effect").cols, 2);
  EXPECT_EQ(a.var.at("dispersion", "var").floats.size(), 50u);
  const auto params = nlohmann::json::parse(a.uns_strings.at("simulator"));
  EXPECT_EQ(params["seed"], 1);
  EXPECT_EQ(params["control_label"], "control");
  EXPECT_DOUBLE_EQ(params["control_fraction"].get<double>(), 0.2);

  for (int64_t r = 0; r < a.n_obs(); ++r)
    for (int64_t k = a.X.indptr[r]; k < a.X.indptr[r + 1]; ++k) {
      const float v = a.X.data[k];
      ASSERT_GT(v, 0);  // zeros are not stored
      ASSERT_EQ(v, std::floor(v));
      if (k > a.X.indptr[r]) {
        ASSERT_LT(a.X.indices[k - 1], a.X.indices[k]);
      }
    }
  // Every perturbation has at least one shared effect, with the configured magnitude.
  const DenseMatrix& lfc = a.varm.at("true_lfc");
  for (int64_t p = 0; p < 4; ++p) {
    int nonzero = 0;
    for (int64_t g = 0; g < 50; ++g) {
      const float e = lfc.values[g * 4 + p];
      if (e != 0) {
        ++nonzero;
        EXPECT_GE(std::fabs(e), 0.5f);
        EXPECT_LE(std::fabs(e), 1.5f);
      }
    }
    EXPECT_GE(nonzero, 1);
  }
}

TEST(Simulator, RejectsBadOptions) {
  SimulatorOptions o = small(0);
  o.cells = 0;
  EXPECT_THROW(simulate(o), std::invalid_argument);
  o = small(0);
  o.lfc_min = 2;
  EXPECT_THROW(simulate(o), std::invalid_argument);
  o = small(0);
  o.perturbations = 0;  // only controls is valid
  EXPECT_EQ(simulate(o).obs.at("perturbation", "obs").categories, (std::vector<std::string>{"control"}));
}

TEST(Simulator, NegativeBinomialMoments) {
  // One population (no types, perturbations, batches or library spread): every cell draws gene g
  // from NB(mu_g = L * share_g, theta_g).
  SimulatorOptions o;
  o.cells = 40000;
  o.genes = 8;
  o.cell_types = 1;
  o.perturbations = 0;
  o.batches = 1;
  o.library_log_sd = 0;
  o.batch_lfc_sd = 0;
  o.program_fraction = 0;
  o.library_size = 200;
  o.seed = 5;
  const AnnData a = simulate(o);
  const auto& share = a.var.at("base_share", "var").floats;
  const auto& theta = a.var.at("dispersion", "var").floats;
  std::vector<double> sum(8, 0), sq(8, 0);
  for (int64_t k = 0; k < a.X.nnz(); ++k) {
    sum[a.X.indices[k]] += a.X.data[k];
    sq[a.X.indices[k]] += double(a.X.data[k]) * a.X.data[k];
  }
  const double n = o.cells;
  for (int g = 0; g < 8; ++g) {
    const double mu = 200 * share[g], var = mu + mu * mu / theta[g];
    const double mean = sum[g] / n, v = (sq[g] - n * mean * mean) / (n - 1);
    // Standard errors: var / n for the mean; for the variance, roughly var * sqrt(2 / n) times a
    // kurtosis factor, which stays below 3 for these dispersions.
    EXPECT_NEAR(mean, mu, 5 * std::sqrt(var / n)) << "gene " << g;
    EXPECT_NEAR(v, var, 5 * 3 * var * std::sqrt(2 / n)) << "gene " << g << " theta " << theta[g];
  }
}

TEST(Simulator, PerturbationEffectsAreRecovered) {
  SimulatorOptions o;
  o.cells = 30000;
  o.genes = 60;
  o.cell_types = 2;
  o.perturbations = 2;
  o.batches = 2;
  o.library_size = 5000;
  o.effect_fraction = 0.1;
  o.seed = 8;
  const AnnData a = simulate(o);
  const auto& pert = a.obs.at("perturbation", "obs").codes;
  const auto& type = a.obs.at("cell_type", "obs").codes;
  const DenseMatrix& by_type = a.varm.at("true_lfc_by_type");
  for (int64_t p = 0; p < 2; ++p) {
    for (int32_t t = 0; t < 2; ++t) {
      int64_t n_ctrl = 0, n_pert = 0;
      const auto ctrl = geneMeans(a, [&](int64_t c) { return pert[c] == 0 && type[c] == t; }, &n_ctrl);
      const auto pm = geneMeans(a, [&](int64_t c) { return pert[c] == p + 1 && type[c] == t; }, &n_pert);
      ASSERT_GT(n_ctrl, 1000);
      ASSERT_GT(n_pert, 1000);
      int checked = 0;
      for (int64_t g = 0; g < 60; ++g) {
        const double truth = by_type.values[g * 4 + p * 2 + t];
        if (ctrl[g] < 2.0) continue;  // too few counts to estimate a ratio well
        const double est = std::log(pm[g] / ctrl[g]);
        if (truth != 0) {
          ++checked;
          EXPECT_EQ(est > 0, truth > 0) << "perturbation " << p << " type " << t << " gene " << g;
          EXPECT_NEAR(est, truth, 0.15 + 0.1 * std::fabs(truth)) << "perturbation " << p << " gene " << g;
        } else {
          EXPECT_NEAR(est, 0.0, 0.15) << "unaffected gene " << g;
        }
      }
      EXPECT_GE(checked, 1);
    }
  }
}

TEST(Simulator, RoundTripsThroughH5ad) {
  latentcell::test::TempDir dir;
  const AnnData a = simulate(small(2));
  writeH5ad(a, dir.file("sim.h5ad"));
  const AnnData b = readH5ad(dir.file("sim.h5ad"));
  EXPECT_EQ(b.X.indptr, a.X.indptr);
  EXPECT_EQ(b.X.indices, a.X.indices);
  EXPECT_EQ(b.X.data, a.X.data);
  for (const char* col : {"cell_type", "perturbation", "batch"}) {
    EXPECT_EQ(b.obs.at(col, "obs").categories, a.obs.at(col, "obs").categories) << col;
    EXPECT_EQ(b.obs.at(col, "obs").codes, a.obs.at(col, "obs").codes) << col;
  }
  EXPECT_EQ(b.var.index, a.var.index);
  EXPECT_EQ(b.varm.at("true_lfc").values, a.varm.at("true_lfc").values);
  EXPECT_EQ(b.uns_strings.at("simulator"), a.uns_strings.at("simulator"));
}

namespace {

// Runs the latentcell binary; returns its exit status and puts its output in `out`.
int runLatentcell(const std::string& args, std::string& out) {
  const std::string cmd = std::string("'") + LATENTCELL_BINARY + "' " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST(Simulator, SimulateCommandWritesTheSameFileForTheSameSeed) {
  latentcell::test::TempDir dir;
  const std::string args = " --cells 120 --genes 30 --cell-types 2 --perturbations 3 --batches 2";
  std::string out;
  ASSERT_EQ(runLatentcell("simulate --out '" + dir.file("a.h5ad") + "'" + args + " --seed 9", out), 0) << out;
  ASSERT_EQ(runLatentcell("simulate --out '" + dir.file("b.h5ad") + "'" + args + " --seed 9", out), 0) << out;
  ASSERT_EQ(runLatentcell("simulate --out '" + dir.file("c.h5ad") + "'" + args + " --seed 10", out), 0) << out;
  const AnnData a = readH5ad(dir.file("a.h5ad")), b = readH5ad(dir.file("b.h5ad")), c = readH5ad(dir.file("c.h5ad"));
  EXPECT_EQ(a.X.data, b.X.data);
  EXPECT_EQ(a.X.indices, b.X.indices);
  EXPECT_NE(a.X.data, c.X.data);
  SimulatorOptions o;
  o.cells = 120, o.genes = 30, o.cell_types = 2, o.perturbations = 3, o.batches = 2, o.seed = 9;
  EXPECT_EQ(a.X.data, simulate(o).X.data);  // the command is the library call

  EXPECT_EQ(runLatentcell("simulate --out '" + dir.file("d.h5ad") + "' --cells 0", out), 2);
  EXPECT_NE(out.find("error: simulate: cells must be >= 1, got 0"), std::string::npos) << out;

  if (!latentcell::test::pythonPath().empty()) {
    EXPECT_EQ(latentcell::test::runPython("tests/python/check_simulated.py", "'" + dir.file("a.h5ad") + "' 120 30 2 3 2"), 0);
  }
}
