// Count preprocessing with scanpy's semantics: library sizes, normalize_total, log1p, highly
// variable genes (flavour seurat_v3) and selecting/reordering genes to a model's vocabulary.
//
// Everything works on the CSR counts in host memory (data/AnnData.h) and returns CSR, because the
// loaders and the tokenizer consume CSR; denseRows() gives a torch tensor where a model wants one.
//
// Parity with scanpy 1.11 (tests/test_preprocess.cpp checks it on a real screen):
// - normalize_total without a target sum divides by the median library size. scanpy takes that
//   median over *all* cells for CSR input and over cells with nonzero counts for dense input; both
//   are offered (MedianOf) and the CSR rule is the default, since our counts are CSR. Arithmetic
//   follows scanpy's float32 steps so that results agree to rounding.
// - seurat_v3 fits log10(variance) on log10(mean) with skmisc's loess (span 0.3, degree 2). skmisc
//   does not evaluate the local regression at every gene but at the vertices of a k-d tree and
//   interpolates with cubic Hermite polynomials (surface = "interpolate"); loessFit() reproduces that
//   construction (Cleveland, Grosse and Shyu's netlib dloess: lowesd/ehg131/ehg124/ehg127/ehg128 for
//   one predictor), so the fitted values, and with them the ranking, match rather than approximate.
#pragma once

#include "data/AnnData.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace latentcell::data {

// Sum of counts per cell, accumulated in double.
std::vector<double> librarySizes(const CsrMatrix& counts);

enum class MedianOf { AllCells, NonzeroCells };  // scanpy's CSR rule / dense rule
double medianLibrarySize(const CsrMatrix& counts, MedianOf median_of = MedianOf::AllCells);

// Each cell scaled to total `target_sum` (default: medianLibrarySize). Cells with no counts stay zero
// (and are reported with a warning, as scanpy does).
CsrMatrix normalizeTotal(const CsrMatrix& counts, std::optional<double> target_sum = std::nullopt,
                         MedianOf median_of = MedianOf::AllCells);
// log(1 + x) of every stored value (zeros stay implicit).
CsrMatrix log1p(const CsrMatrix& values);
// The same two steps on `x` itself, for large matrices that should not exist twice.
void normalizeTotalInPlace(CsrMatrix& x, std::optional<double> target_sum = std::nullopt,
                           MedianOf median_of = MedianOf::AllCells);
void log1pInPlace(CsrMatrix& x);
// normalizeTotalInPlace then log1pInPlace in one pass, with the same values: log1p is taken once per
// distinct small integer count of a row instead of once per entry.
void normalizeTotalLog1pInPlace(CsrMatrix& x, std::optional<double> target_sum = std::nullopt,
                                MedianOf median_of = MedianOf::AllCells);

// Local quadratic (degree 2) or linear regression of y on x with tricube weights over the nearest
// span * n points, evaluated as skmisc.loess does by default (k-d tree vertices + Hermite
// interpolation, cell = 0.2). Returns the fitted values at the x's. Throws std::invalid_argument when
// the span leaves fewer points than the local polynomial has coefficients.
std::vector<double> loessFit(const std::vector<double>& x, const std::vector<double>& y, double span = 0.3,
                             int degree = 2);

struct HvgOptions {
  int64_t n_top_genes = 2000;
  double span = 0.3;
  // Optional batch code of every cell (empty: one batch). Genes are ranked within each batch and
  // combined as scanpy does: median rank among the batches where the gene is in the top n, then the
  // number of such batches.
  std::vector<int64_t> batch;
};

struct HvgResult {
  std::vector<double> means;            // per gene, over all cells
  std::vector<double> variances;        // per gene, unbiased
  std::vector<double> variances_norm;   // clipped standardised variance, mean over batches
  std::vector<double> rank;             // median within-batch rank (NaN: not in any batch's top n)
  std::vector<int64_t> nbatches;        // batches in whose top n the gene is
  std::vector<uint8_t> highly_variable;  // per gene
  std::vector<int64_t> selected;        // indices of the highly variable genes, best first
};

// scanpy.pp.highly_variable_genes(flavor="seurat_v3") on raw counts. Ties in the standardised
// variance go to the lower gene index (numpy's unstable argsort may order exact ties differently).
HvgResult highlyVariableGenesSeuratV3(const CsrMatrix& counts, const HvgOptions& options = {});

// Where each wanted gene is in the data: source[i] is the data column of wanted[i], or -1 when the
// data lack it (only in lenient mode).
struct GeneMapping {
  std::vector<int64_t> source;
  std::vector<std::string> missing;  // wanted genes the data lack, in wanted order
};

// Maps `wanted` (a gene list or a model's gene vocabulary) onto the data's var names. Missing genes
// are an error naming how many and the first ones, unless `lenient`, which zero-fills them and logs a
// warning. A wanted gene that is duplicated in the data is an error.
GeneMapping mapGenes(const std::vector<std::string>& var_names, const std::vector<std::string>& wanted,
                     bool lenient = false);
// The columns of `counts` in mapping order (missing genes as empty columns).
CsrMatrix selectGenes(const CsrMatrix& counts, const GeneMapping& mapping);
CsrMatrix selectGenes(const CsrMatrix& counts, const std::vector<int64_t>& columns);

// Rows `rows` of `values` as a dense float32 [rows, cols] CPU tensor (all rows when empty).
at::Tensor denseRows(const CsrMatrix& values, const std::vector<int64_t>& rows = {});

}  // namespace latentcell::data
