// `latentcell data convert`: an h5ad file (or an AnnData in memory) to a shard directory.
//
// The format and the cell order are described in ShardDataset.h. Conversion streams the matrix in
// two passes of chunks through H5adRowReader: the first takes each cell's entry count and checks the
// values (finite and non-negative; whole numbers up to 65535 are stored as uint16), the second
// scatters each chunk's rows to their places in the memory-mapped shards. Memory holds the obs table,
// the per-cell layout (a few bytes per cell) and one chunk, not the matrix; the page cache absorbs
// the scattered writes while the output fits in memory (beyond that they become random writes).
// The output is written under OUT_DIR.partial and renamed, so it is complete or absent.
#pragma once

#include "data/AnnData.h"
#include "data/ShardFile.h"

#include <cstdint>
#include <string>
#include <vector>

namespace latentcell::data {

struct ShardConvertOptions {
  std::string matrix = "X";          // X, layers/<name> or raw/X
  std::string condition;             // obs column whose values group cells ("" = no grouping)
  std::string control;               // control label of `condition` ("" = none)
  std::vector<std::string> context;  // obs columns a control group must share (e.g. cell_type, batch)
  std::vector<std::string> obs;      // obs columns to store besides those; empty = every categorical one
  int64_t shard_cells = int64_t{1} << 20;
  int64_t chunk_cells = int64_t{1} << 15;  // rows read at a time
  uint64_t seed = 0;                       // the order of cells within groups
  bool float_values = false;               // store float32 even when uint16 holds the values
};

struct ShardConvertReport {
  int64_t cells = 0, genes = 0, nnz = 0, shards = 0, groups = 0;
  ShardDtype values = ShardDtype::F32;
  ShardDtype indices = ShardDtype::U16;
  uint64_t bytes = 0;  // all files
};

// Throws std::invalid_argument for bad options or inputs (a missing column, an unknown control
// label, a cell without a grouping value, negative or non-finite values, a non-empty OUT_DIR),
// naming what and where; std::runtime_error for I/O failures.
ShardConvertReport convertH5adToShards(const std::string& h5ad, const std::string& out_dir,
                                       const ShardConvertOptions& options);
// The same from an AnnData in memory (tests and the fuzz target's seeds).
ShardConvertReport writeShards(const AnnData& adata, const std::string& out_dir, const ShardConvertOptions& options);

}  // namespace latentcell::data
