// cell-eval 0.8.2's `cell-eval run` in C++: the same input checks, normalisation, per-perturbation
// metrics, results.csv / agg_results.csv layout and pdex DE tables, so that numbers computed here
// can be quoted as cell-eval numbers (notes sec. 6; tests/test_cell_eval.cpp compares with the CLI).
//
// Heavy work (pseudobulks, DE through eval/DifferentialExpression, energy distances) reads the
// log1p CSR; no [cells, genes] matrix is densified whole (DE sweeps the CSR on the CPU, energy
// distances densify one label's cells at a time on the chosen device). The per-perturbation scores
// are then small [perturbations, genes] tables reduced on the host. cell-eval's conventions are kept where they
// change numbers: pseudobulks are float32 means, DE columns are cast to float32 before thresholding
// (fdr < 0.05) and sorting by |log2FC| (ties by gene order), discrimination ranks are stable,
// aggregates are polars' describe (nearest-rank quantiles, NaN sorted last).
// clustering_agreement (Leiden clustering) is not computed; reports list it under `omitted`.
#pragma once

#include "data/AnnData.h"
#include "eval/DifferentialExpression.h"

#include <c10/core/Device.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::eval {

// One side of the comparison, as cell-eval reads it from an h5ad.
struct CellEvalData {
  data::CsrMatrix x;                       // [cells, genes] X as stored
  std::vector<std::string> perturbations;  // [cells] label of each cell
  std::vector<std::string> genes;          // [genes] var_names
  std::string source;                      // the file, for messages
  // The label column's categories when it is categorical, else empty: pdex lists a file's DE
  // targets in category order (pd.Categorical keeps it), and in sorted order otherwise.
  std::vector<std::string> categories;
};

// X, the `pertCol` labels and var_names of `adata` (error naming the file when the column is missing).
CellEvalData cellEvalData(const data::AnnData& adata, const std::string& pertCol);
// The cells of each `celltypeCol` value, in order of first appearance (as pandas' unique()).
std::vector<std::pair<std::string, CellEvalData>> splitByCelltype(const data::AnnData& adata,
                                                                  const std::string& pertCol,
                                                                  const std::string& celltypeCol);

// cell_eval.utils.guess_is_lognorm(validate=True): true for log1p data (a fractional part above 1e-3
// somewhere; then every value must lie in [0, 15)), false for counts (integer-looking, >= 0). Values
// fitting neither are an invalid_argument naming `which` and `source`.
bool looksLogNormalised(const data::CsrMatrix& x, const std::string& which, const std::string& source);

// cell-eval's _convert_to_normlog on one matrix, with its checks (guess_is_lognorm): integer-looking
// values are counts, normalize_total'd to the median library size and log1p'd in place (returns
// true); fractional values must already be log1p data in [0, 15) and are left alone (returns false).
// Errors are invalid_argument naming `which` ("real", "pred", ...) and `source` (the file).
bool toCellEvalLogSpace(data::CsrMatrix& x, const std::string& which, const std::string& source);

// cell-eval's profiles (KNOWN_PROFILES); "pds" skips DE.
enum class CellEvalProfile { Full, Minimal, Vcc, De, Anndata, Pds };
CellEvalProfile parseCellEvalProfile(const std::string& name);

struct CellEvalOptions {
  std::string controlPert = "non-targeting";
  CellEvalProfile profile = CellEvalProfile::Full;
  c10::Device device = c10::Device(c10::kCPU);
  int threads = 0;  // CPU threads over perturbations (eval/Parallel.h); <= 1: one at a time
};

// results.csv as a table: one row per perturbation (sorted, control excluded), one column per metric.
struct MetricTable {
  std::string indexName;                                  // "perturbation" or "statistic"
  std::vector<std::string> rows;
  std::vector<std::string> columns;                       // metric names in cell-eval's order
  std::vector<std::vector<std::optional<double>>> values;  // [column][row]; nullopt = null
};

// One pdex table (real_de.csv or pred_de.csv): targets in sorted label order, genes in var order;
// written in pdex's target order (rowOrder).
struct DeTable {
  std::vector<std::string> targets;
  std::vector<std::string> genes;
  DeResult de;  // on the CPU
  std::vector<int64_t> rowOrder;  // targets (indices) in the order pdex writes them
};

struct CellEvalReport {
  MetricTable results;
  std::optional<DeTable> realDe, predDe;  // absent for the pds profile, which skips DE
  std::vector<std::string> omitted;       // metrics of the profile not computed here
  bool realNormalised = false, predNormalised = false;  // integer-looking X was normalize_total + log1p'd
};

// Runs cell-eval's checks (invalid_argument with cell-eval's one-line message, prefixed by the file)
// and metrics. `real` and `pred` are taken by value: their X is normalised in place when it looks
// like counts.
CellEvalReport evaluateCellEval(CellEvalData real, CellEvalData pred, const CellEvalOptions& options);

// polars DataFrame.describe() of the metric columns: count, null_count, mean, std, min, 25%, 50%,
// 75%, max, as agg_results.csv.
MetricTable describeMetrics(const MetricTable& results);

// CSV writers with polars' text for floats (shortest round-trip, integral values as "1.0", NaN,
// inf, null as an empty field).
// A float as polars writes it in CSV: shortest round-trip text, integral values as "1.0", "NaN", "inf".
std::string csvNumber(double v);

void writeMetricCsv(const MetricTable& table, const std::string& path);
void writeDeCsv(const DeTable& table, const std::string& path);

}  // namespace latentcell::eval
