// h5ad (AnnData on HDF5) reading and writing on the HDF5 C API, without Python.
//
// The reader accepts what anndata 0.7 to 0.12 and h5py write (notes sec. 7): X as CSR, CSC or dense
// of any integer or float dtype, 32/64-bit signed or unsigned indices, gzip or LZF compression, the
// dataframe encodings of obs/var, dense obsm/varm and scalar uns. Values are converted to float32
// and indices bounds-checked, so corrupt input ends in one runtime_error line naming the file, the
// element and the fix, never in a crash. The writer emits exactly the encodings anndata 0.12 writes.
//
// libhdf5 is not thread-safe: every HDF5 call of this module runs under one process-wide mutex, so
// readers on several threads serialise rather than corrupt each other; for throughput read in one
// I/O thread and decode elsewhere.
#pragma once

#include "data/AnnData.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace latentcell::data {

struct H5adReadOptions {
  // The matrix that becomes AnnData::X: "X", "layers/<name>" or "raw/X" (raw/X brings raw/var as var).
  std::string matrix = "X";
  // Also load the dense obsm/varm entries (sparse or dataframe entries are skipped with a debug log).
  bool obsm = true;
  // false: read only the tables; X gets the matrix's shape but no entries (indptr stays empty), for
  // tools that stream the matrix itself with H5adRowReader.
  bool matrix_values = true;
};

AnnData readH5ad(const std::string& path, const H5adReadOptions& options = {});

// Writes `adata` as anndata 0.12 would (X as csr_matrix float32); the file appears atomically
// (written to path + ".tmp", then renamed), so a failure leaves no partial file behind.
void writeH5ad(const AnnData& adata, const std::string& path);

enum class H5adStorage { Csr, Csc, Dense };
const char* storageName(H5adStorage storage);  // "csr", "csc", "dense"

// How one matrix is stored on disk, and what else the file holds, without loading the values.
struct H5adInfo {
  std::string matrix;        // e.g. "X"
  H5adStorage storage = H5adStorage::Csr;
  std::string dtype;         // on-disk dtype of the values: "float32", "int64", "uint16", ...
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stored = 0;        // entries on disk: nnz for sparse, rows * cols for dense
  std::vector<std::string> layers;
  bool has_raw = false;
  std::vector<std::pair<std::string, std::string>> obsm;  // key, "dense float32 300x5" / "csr_matrix" / ...
};
H5adInfo inspectH5ad(const std::string& path, const std::string& matrix = "X");

// Backed access to contiguous blocks of cells of a CSR or dense matrix, the file kept open.
// An instance must be used from one thread at a time (it holds HDF5 handles); the HDF5 calls
// themselves are serialised with every other reader in the process.
class H5adRowReader {
 public:
  explicit H5adRowReader(const std::string& path, const std::string& matrix = "X");
  ~H5adRowReader();
  H5adRowReader(H5adRowReader&&) noexcept;
  H5adRowReader& operator=(H5adRowReader&&) noexcept;

  int64_t n_obs() const;
  int64_t n_vars() const;
  const H5adInfo& info() const;
  // Rows [begin, end) as a CSR matrix with end - begin rows (canonical: sorted, no duplicates).
  CsrMatrix readRows(int64_t begin, int64_t end);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- value checks --------------------------------------------------------------------------------

// True when every stored value is a finite whole number (raw counts stored as floats pass).
bool allWholeNumbers(const CsrMatrix& m);

struct BadValue {
  int64_t row = 0;
  int64_t col = 0;
  float value = 0;
};
// The first stored value (in row order) that is not a count: negative, non-finite, or (when
// `whole` is set) fractional. nullopt when all are counts.
std::optional<BadValue> firstNonCount(const CsrMatrix& m, bool whole = true);

// Throws std::invalid_argument (an input error, exit 2 in the CLI) unless X holds counts, naming
// `source` (the file), the first offending cell and gene by name and value, and the fix (pass raw
// counts, e.g. layers/counts or raw/X).
void requireCounts(const AnnData& adata, const std::string& source);

}  // namespace latentcell::data
