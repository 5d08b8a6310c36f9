// Negative-binomial perturbation-screen simulator (see Simulator.h).
#include "data/Simulator.h"

#include "core/Random.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <stdexcept>

namespace latentcell::data {
namespace {

// Portable draws on top of mt19937_64 (whose output sequence the standard fixes).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream, uint64_t index)
      : gen_(core::splitMix64(core::splitMix64(seed ^ core::splitMix64(stream)) + index)) {}

  double uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t below(uint64_t n) {                                                  // [0, n), unbiased
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = gen_(); while (r >= limit);
    return r % n;
  }
  double normal() {  // Box-Muller, one value per pair so no state is carried between calls
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  double gamma(double shape) {  // scale 1; Marsaglia and Tsang (2000)
    if (shape < 1.0) return gamma(shape + 1.0) * std::pow(1.0 - uniform(), 1.0 / shape);
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x, v;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const double u = 1.0 - uniform();
      if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
  }
  int64_t poisson(double lam) {
    if (lam <= 0) return 0;
    if (lam < 10) {  // multiplication method
      const double limit = std::exp(-lam);
      int64_t k = 0;
      for (double p = uniform(); p > limit; p *= uniform()) ++k;
      return k;
    }
    // PTRS, transformed rejection with squeeze (Hoermann 1993), as numpy's legacy generator.
    const double slam = std::sqrt(lam), loglam = std::log(lam);
    const double b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b;
    const double invalpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2);
    for (;;) {
      const double u = uniform() - 0.5, v = uniform(), us = 0.5 - std::fabs(u);
      const double k = std::floor((2 * a / us + b) * u + lam + 0.43);
      if (us >= 0.07 && v <= vr) return static_cast<int64_t>(k);
      if (k < 0 || (us < 0.013 && v > us)) continue;
      if (std::log(v) + std::log(invalpha) - std::log(a / (us * us) + b) <= -lam + k * loglam - std::lgamma(k + 1))
        return static_cast<int64_t>(k);
    }
  }
  // Negative binomial with mean mu and dispersion theta, as a Gamma-Poisson mixture.
  int64_t negativeBinomial(double mu, double theta) { return poisson(gamma(theta) * mu / theta); }
  // `k` distinct values of [0, n), by a partial Fisher-Yates shuffle.
  std::vector<int64_t> choose(int64_t n, int64_t k) {
    std::vector<int64_t> all(n);
    for (int64_t i = 0; i < n; ++i) all[i] = i;
    for (int64_t i = 0; i < k; ++i) std::swap(all[i], all[i + static_cast<int64_t>(below(n - i))]);
    all.resize(k);
    return all;
  }
  double effect(double lo, double hi) {  // a random sign times a magnitude uniform in [lo, hi]
    const double sign = below(2) ? 1.0 : -1.0;
    return sign * (lo + (hi - lo) * uniform());
  }

 private:
  std::mt19937_64 gen_;
};

enum Stream : uint64_t { kParameters = 1, kCells = 2 };

void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("simulate: " + what);
}

Column categorical(const std::string& prefix, int64_t n, std::vector<int32_t> codes, const std::string& first = "") {
  Column c;
  c.kind = Column::Kind::Categorical;
  if (!first.empty()) c.categories.push_back(first);
  for (int64_t i = 0; i < n; ++i) c.categories.push_back(prefix + std::to_string(i));
  c.codes = std::move(codes);
  return c;
}

int64_t atLeastOne(double fraction, int64_t genes) {
  return std::min<int64_t>(genes, std::max<int64_t>(1, std::llround(fraction * static_cast<double>(genes))));
}

}  // namespace

AnnData simulate(const SimulatorOptions& o) {
  check(o.cells >= 1, fmt::format("cells must be >= 1, got {}", o.cells));
  check(o.genes >= 1, fmt::format("genes must be >= 1, got {}", o.genes));
  check(o.cell_types >= 1, fmt::format("cell types must be >= 1, got {}", o.cell_types));
  check(o.perturbations >= 0, fmt::format("perturbations must be >= 0, got {}", o.perturbations));
  check(o.batches >= 1, fmt::format("batches must be >= 1, got {}", o.batches));
  check(o.control_fraction <= 1, fmt::format("control fraction must be <= 1, got {}", o.control_fraction));
  check(o.library_size > 0, fmt::format("library size must be > 0, got {}", o.library_size));
  check(o.dispersion > 0, fmt::format("dispersion must be > 0, got {}", o.dispersion));
  check(o.lfc_min >= 0 && o.lfc_max >= o.lfc_min,
        fmt::format("need 0 <= lfc_min <= lfc_max, got {} and {}", o.lfc_min, o.lfc_max));
  for (double f : {o.program_fraction, o.effect_fraction, o.specific_fraction})
    check(f >= 0 && f <= 1, fmt::format("gene fractions must be in [0, 1], got {}", f));
  const int64_t G = o.genes, C = o.cell_types, P = o.perturbations, B = o.batches;

  // ---- parameters -------------------------------------------------------------------------------
  Rng rng(o.seed, kParameters, 0);
  std::vector<double> log_share(G), theta(G);
  double total = 0;
  for (int64_t g = 0; g < G; ++g) {
    log_share[g] = o.base_log_sd * rng.normal();
    total += std::exp(log_share[g]);
  }
  for (int64_t g = 0; g < G; ++g) {
    log_share[g] -= std::log(total);
    theta[g] = o.dispersion * std::exp(o.dispersion_log_sd * rng.normal());
  }
  DenseMatrix program{G, C, std::vector<float>(G * C, 0.0f)};
  for (int64_t t = 0; t < C; ++t)
    for (int64_t g : rng.choose(G, std::llround(o.program_fraction * static_cast<double>(G))))
      program.values[g * C + t] = static_cast<float>(o.program_lfc_sd * rng.normal());
  DenseMatrix shared{G, P, std::vector<float>(G * P, 0.0f)};
  DenseMatrix by_type{G, P * C, std::vector<float>(G * P * C, 0.0f)};
  for (int64_t p = 0; p < P; ++p) {
    for (int64_t g : rng.choose(G, atLeastOne(o.effect_fraction, G)))
      shared.values[g * P + p] = static_cast<float>(rng.effect(o.lfc_min, o.lfc_max));
    for (int64_t t = 0; t < C; ++t) {
      for (int64_t g = 0; g < G; ++g) by_type.values[g * P * C + p * C + t] = shared.values[g * P + p];
      for (int64_t g : rng.choose(G, std::llround(o.specific_fraction * static_cast<double>(G))))
        by_type.values[g * P * C + p * C + t] += static_cast<float>(rng.effect(o.lfc_min, o.lfc_max));
    }
  }
  DenseMatrix batch_effect{G, B, std::vector<float>(G * B, 0.0f)};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) batch_effect.values[g * B + b] = static_cast<float>(o.batch_lfc_sd * rng.normal());

  // ---- cells ------------------------------------------------------------------------------------
  const double control_fraction = o.control_fraction >= 0 ? o.control_fraction : 1.0 / static_cast<double>(P + 1);
  AnnData ad;
  ad.X.rows = o.cells;
  ad.X.cols = G;
  ad.X.indptr.assign(1, 0);
  std::vector<int32_t> type_code(o.cells), pert_code(o.cells), batch_code(o.cells);
  std::vector<double> library(o.cells);
  for (int64_t c = 0; c < o.cells; ++c) {
    Rng cell(o.seed, kCells, static_cast<uint64_t>(c));
    const int64_t t = static_cast<int64_t>(cell.below(C));
    const int64_t b = static_cast<int64_t>(cell.below(B));
    const bool control = P == 0 || cell.uniform() < control_fraction;
    const int64_t p = control ? -1 : static_cast<int64_t>(cell.below(P));
    library[c] = o.library_size * std::exp(o.library_log_sd * cell.normal());
    type_code[c] = static_cast<int32_t>(t);
    batch_code[c] = static_cast<int32_t>(b);
    pert_code[c] = static_cast<int32_t>(p + 1);  // category 0 is control
    for (int64_t g = 0; g < G; ++g) {
      double log_mu = log_share[g] + program.values[g * C + t] + batch_effect.values[g * B + b];
      if (p >= 0) log_mu += by_type.values[g * P * C + p * C + t];
      const int64_t x = cell.negativeBinomial(library[c] * std::exp(log_mu), theta[g]);
      if (x > 0) {
        ad.X.indices.push_back(static_cast<int32_t>(g));
        ad.X.data.push_back(static_cast<float>(x));
      }
    }
    ad.X.indptr.push_back(ad.X.nnz());
  }

  for (int64_t c = 0; c < o.cells; ++c) ad.obs.index.push_back("cell_" + std::to_string(c));
  ad.obs.columns.emplace_back("cell_type", categorical("type_", C, std::move(type_code)));
  ad.obs.columns.emplace_back("perturbation", categorical("pert_", P, std::move(pert_code), "control"));
  ad.obs.columns.emplace_back("batch", categorical("batch_", B, std::move(batch_code)));
  Column lib;
  lib.kind = Column::Kind::Float;
  lib.floats = std::move(library);
  ad.obs.columns.emplace_back("true_library_size", std::move(lib));

  Column disp, share;
  disp.kind = share.kind = Column::Kind::Float;
  for (int64_t g = 0; g < G; ++g) {
    ad.var.index.push_back("gene_" + std::to_string(g));
    disp.floats.push_back(theta[g]);
    share.floats.push_back(std::exp(log_share[g]));
  }
  ad.var.columns.emplace_back("dispersion", std::move(disp));
  ad.var.columns.emplace_back("base_share", std::move(share));
  ad.varm["true_lfc"] = std::move(shared);
  ad.varm["true_lfc_by_type"] = std::move(by_type);
  ad.varm["cell_type_program"] = std::move(program);
  ad.varm["batch_effect"] = std::move(batch_effect);

  const nlohmann::json params = {
      {"cells", o.cells}, {"genes", G}, {"cell_types", C}, {"perturbations", P}, {"batches", B},
      {"seed", o.seed}, {"control_fraction", control_fraction}, {"library_size", o.library_size},
      {"library_log_sd", o.library_log_sd}, {"base_log_sd", o.base_log_sd}, {"dispersion", o.dispersion},
      {"dispersion_log_sd", o.dispersion_log_sd}, {"program_fraction", o.program_fraction},
      {"program_lfc_sd", o.program_lfc_sd}, {"effect_fraction", o.effect_fraction},
      {"specific_fraction", o.specific_fraction}, {"lfc_min", o.lfc_min}, {"lfc_max", o.lfc_max},
      {"batch_lfc_sd", o.batch_lfc_sd}, {"lfc_units", "natural log"}, {"control_label", "control"}};
  ad.uns_strings["simulator"] = params.dump();
  return ad;
}

}  // namespace latentcell::data
