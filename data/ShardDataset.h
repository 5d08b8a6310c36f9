// latentcell's sharded on-disk format for large datasets: memory-mapped CSR shards with an index.
//
// h5ad is an exchange format: HDF5 serialises every read behind one lock and decodes chunk by chunk,
// which caps a loader at a few thousand random rows per second. A shard directory holds the same
// counts laid out for training instead:
//
//   OUT_DIR/index.lcs          cell order and metadata: JSON (shape, var names, obs categories,
//                              grouping, shard list), per-cell source rows and obs codes, the
//                              condition groups, the first cell of every shard
//   OUT_DIR/shard-00000.lcs    CSR rows of consecutive cells: indptr (int64), indices (uint16 when
//   OUT_DIR/shard-00001.lcs    there are at most 65536 genes, else uint32), values (uint16 when every
//   ...                        value is a whole number in [0, 65535], else float32) -- the values
//                              exactly as stored in the h5ad, in less space
//
// Every file is a ShardFile container (versioned header, CRC-32C per section); all shards carry the
// dataset id of their index, so a shard from another conversion is caught too.
//
// Cell order: cells are sorted by group, a group being the cells sharing the context values (e.g.
// cell type and batch) and the condition (e.g. perturbation); within a context the control group
// comes first; within a group the cells are in a seeded random order. So
// - the cells of one condition in one context are one contiguous range, and the matched control
//   cells of that context another one (CellGroup::control), which is what transport priors read;
// - a block-shuffled epoch (DistributedSampler with block_size) reads contiguous runs of cells;
//   the within-group shuffle keeps a block from repeating the h5ad's own order.
// sourceRows() maps each cell back to its row in the h5ad.
//
// ShardConvert.h writes it (`latentcell data convert`).
//
// Reading is thread-safe and allocation-light: the mappings are read-only, and every access checks
// the indices it copies (in range, ascending), so even an unverified corrupt shard gives an error,
// never a crash.
#pragma once

#include "data/AnnData.h"
#include "data/ShardFile.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace latentcell::data {

// File names and magics of a shard directory (shared by the converter and the reader).
inline constexpr char kShardIndexMagic[9] = "LCSINDEX";
inline constexpr char kShardMagic[9] = "LCSSHARD";
inline constexpr const char* kShardIndexFile = "index.lcs";
std::string shardFileName(int64_t shard);  // "shard-00000.lcs"

struct ShardOpenOptions {
  // Check every section's checksum at open (reads every byte once); off, only the headers, the
  // index and the structure are checked, and indices are still checked as they are read.
  bool verify_checksums = true;
};

// An obs column as stored: categories and one code per cell (-1 = missing).
struct ShardObsColumn {
  std::string name;
  std::vector<std::string> categories;
  std::span<const int32_t> codes;  // [cells]
};

// Cells [begin, end) share the context values and the condition.
struct CellGroup {
  int64_t begin = 0, end = 0;
  int32_t condition = -1;        // code in the condition column, -1 without grouping
  std::vector<int32_t> context;  // codes in the context columns
  int64_t control = -1;          // the group of control cells with the same context; -1: none, or a control group
  bool is_control = false;
  int64_t size() const { return end - begin; }
};

class ShardDataset {
 public:
  // Throws ShardFormatError (a std::invalid_argument) naming the file and the problem.
  explicit ShardDataset(const std::string& dir, const ShardOpenOptions& options = {});

  const std::string& dir() const { return dir_; }
  int64_t cells() const { return cells_; }
  int64_t genes() const { return genes_; }
  int64_t nnz() const { return nnz_; }
  int64_t shards() const { return static_cast<int64_t>(shards_.size()); }
  ShardDtype valueDtype() const { return value_dtype_; }
  bool wholeNumbers() const { return whole_numbers_; }
  const std::string& source() const { return source_; }  // the converted file, for messages

  const std::vector<std::string>& varNames() const { return var_names_; }
  const std::vector<ShardObsColumn>& obs() const { return obs_; }
  // The column or a std::invalid_argument naming it and the columns stored.
  const ShardObsColumn& obsColumn(const std::string& name) const;
  std::span<const int64_t> sourceRows() const { return source_rows_; }  // [cells] row in the h5ad

  const std::string& conditionColumn() const { return condition_; }
  const std::string& controlLabel() const { return control_; }
  const std::vector<std::string>& contextColumns() const { return context_; }
  const std::vector<CellGroup>& groups() const { return groups_; }

  // Stored entries of cell `cell`.
  int64_t rowNnz(int64_t cell) const;
  // Cells [begin, end) as CSR (float values, as stored).
  CsrMatrix rows(int64_t begin, int64_t end) const;
  // `cells` in the given order (repeats allowed) as CSR.
  CsrMatrix gather(std::span<const int64_t> cells) const;
  // The same into caller memory: first gatherNnz for the sizes, then gatherInto, whose indptr
  // [n + 1] starts at 0, indices [nnz], values [nnz].
  int64_t gatherNnz(std::span<const int64_t> cells) const;
  void gatherInto(std::span<const int64_t> cells, int64_t* indptr, int32_t* indices, float* values) const;
  // `cells` as a dense row-major [n, genes] block (zeros written too).
  void gatherDense(std::span<const int64_t> cells, float* out) const;

 private:
  struct Shard {
    MappedShardFile file;
    int64_t first = 0, cells = 0;
    std::span<const int64_t> indptr;  // [cells + 1]
    const void* indices = nullptr;
    const void* values = nullptr;
  };
  const Shard& shardOf(int64_t cell) const;
  void checkCell(int64_t cell) const;
  [[noreturn]] void badIndex(const Shard& shard, int64_t cell) const;
  // Copies cell `cell`'s entries to out_indices/out_values (as int32/float); returns the count.
  int64_t copyRow(int64_t cell, int32_t* out_indices, float* out_values) const;

  std::string dir_;
  std::string source_;
  int64_t cells_ = 0, genes_ = 0, nnz_ = 0;
  ShardDtype value_dtype_ = ShardDtype::F32;
  ShardDtype index_dtype_ = ShardDtype::U16;
  bool whole_numbers_ = false;
  std::vector<std::string> var_names_;
  std::vector<ShardObsColumn> obs_;
  std::string condition_, control_;
  std::vector<std::string> context_;
  std::vector<CellGroup> groups_;
  MappedShardFile index_;
  std::span<const int64_t> source_rows_;
  std::vector<int64_t> shard_first_;  // [shards + 1]
  std::vector<Shard> shards_;
};

}  // namespace latentcell::data
