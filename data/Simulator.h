// A simulator of perturbation screens with known ground truth, for tests, demos and benchmarks.
//
// Counts are negative binomial (a Gamma-Poisson mixture with per-gene dispersion theta, so the
// variance is mu + mu^2 / theta), with the mean of gene g in cell c
//   mu_cg = L_c * p_g * exp(type[t_c, g] + pert[p_c, g] + pert_type[p_c, t_c, g] + batch[b_c, g]),
// where p_g are baseline expression shares (summing to 1), L_c a log-normal library size, type[] a
// sparse programme of log-mean shifts per cell type, pert[] a sparse effect shared by all cell types,
// pert_type[] a sparse effect specific to one cell type, and batch[] small dense shifts. Control cells
// (label `control`) have no perturbation effect. Effects are natural-log fold changes, so a
// perturbation's true LFC in cell type t is exactly log(E[x | pert, t] / E[x | control, t]).
//
// Output: an AnnData with raw counts in X; obs columns cell_type, perturbation (categories
// `control`, pert_0, ...), batch (all categorical) and true_library_size; var_names gene_0, ... with
// var columns dispersion and base_share; varm entries true_lfc (genes x perturbations, the shared
// effect), true_lfc_by_type (genes x perturbations*cell_types, column p * cell_types + t: the whole
// effect of perturbation p in cell type t), cell_type_program (genes x cell_types) and batch_effect
// (genes x batches); uns_strings["simulator"] holds the options as JSON.
//
// Deterministic by seed on every machine: random numbers come from std::mt19937_64 streams (its
// output is fixed by the standard) turned into uniforms, normals, gammas and Poissons by our own
// code, not by the implementation-defined std:: distributions. Parameters use one stream and each
// cell its own, so a cell's counts depend only on the seed, its index and the parameters.
#pragma once

#include "data/AnnData.h"

#include <cstdint>

namespace latentcell::data {

struct SimulatorOptions {
  int64_t cells = 1000;
  int64_t genes = 200;
  int64_t cell_types = 3;
  int64_t perturbations = 5;  // besides control
  int64_t batches = 2;
  uint64_t seed = 0;
  // Share of control cells; < 0 means 1 / (perturbations + 1), i.e. control is as common as each
  // perturbation (what a balanced screen with one non-targeting guide class looks like).
  double control_fraction = -1;
  double library_size = 2000;     // median library size of a control cell (exp of the log-normal mean)
  double library_log_sd = 0.3;    // sd of log L_c
  double base_log_sd = 1.0;       // spread of the baseline shares (log scale)
  double dispersion = 3.0;        // median theta
  double dispersion_log_sd = 0.5;  // spread of log theta across genes
  double program_fraction = 0.1;  // genes in each cell type's programme
  double program_lfc_sd = 1.0;
  double effect_fraction = 0.05;  // genes with a shared effect per perturbation (at least one)
  double specific_fraction = 0.02;  // genes with a cell-type-specific effect per (perturbation, type)
  double lfc_min = 0.5;           // effect sizes |lfc| are uniform in [lfc_min, lfc_max], random sign
  double lfc_max = 1.5;
  double batch_lfc_sd = 0.2;
};

// Throws std::invalid_argument naming the first bad option.
AnnData simulate(const SimulatorOptions& options);

}  // namespace latentcell::data
