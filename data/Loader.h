// Minibatches of cells as tensors, prepared ahead of the training loop by background threads.
//
// A Loader walks the epoch order of a DistributedSampler (this rank's disjoint share, deterministic
// by seed and epoch, block-shuffled for on-disk sources so that a batch is a few contiguous reads)
// and turns each batch of cell ids into tensors: CSR (indptr, indices, values), dense [cells, genes]
// or gene tokens (data/Tokenizer.h).
//
// Batch k of an epoch is a pure function of (seed, epoch, rank, k), so the result does not depend on
// how many threads prepare it: worker threads claim batch numbers in order, at most `prefetch`
// ahead of the consumer, and next() hands them out in order. Resuming mid-epoch is start(epoch, b):
// the batches from b on are exactly those an uninterrupted run would have produced next. A read
// error is rethrown by next() for the batch it belongs to.
//
// Sources: ShardSource reads memory-mapped shards without locks; H5adSource reads an h5ad file
// through one H5adRowReader behind a mutex (libhdf5 is not thread-safe; its calls are serialised
// process-wide in any case), merging each batch's cells into runs of consecutive rows. With
// `device` CUDA (and CUDA present) batches are allocated in pinned host memory, so the copy to the
// GPU can be asynchronous; on the CPU nothing is pinned.
#pragma once

#include "data/AnnData.h"
#include "data/DistributedSampler.h"
#include "data/Tokenizer.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace latentcell::data {

class ShardDataset;
class H5adRowReader;

// CSR rows as tensors: indptr [n + 1] int64 (from 0), indices [nnz] int32, values [nnz] float32.
struct CsrTensors {
  at::Tensor indptr, indices, values;
};

// Where a loader reads cells from. read() may be called from several threads at once.
class CellSource {
 public:
  virtual ~CellSource() = default;
  virtual int64_t cells() const = 0;
  virtual int64_t genes() const = 0;
  // Rows `cells` (any order, repeats allowed) in that order; pinned: allocate in pinned memory.
  virtual CsrTensors read(std::span<const int64_t> cells, bool pinned) = 0;
};

class ShardSource final : public CellSource {
 public:
  explicit ShardSource(std::shared_ptr<const ShardDataset> dataset);
  int64_t cells() const override;
  int64_t genes() const override;
  CsrTensors read(std::span<const int64_t> cells, bool pinned) override;
  const ShardDataset& dataset() const { return *dataset_; }

 private:
  std::shared_ptr<const ShardDataset> dataset_;
};

class H5adSource final : public CellSource {
 public:
  explicit H5adSource(const std::string& path, const std::string& matrix = "X");
  ~H5adSource() override;
  int64_t cells() const override;
  int64_t genes() const override;
  CsrTensors read(std::span<const int64_t> cells, bool pinned) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

enum class BatchFormat { Csr, Dense, Tokens };
// "csr" / "dense" / "tokens"; anything else throws std::invalid_argument naming the choices.
BatchFormat parseBatchFormat(const std::string& name);

struct LoaderOptions {
  int64_t batch_size = 256;
  bool shuffle = true;
  uint64_t seed = 0;
  int64_t world_size = 1;
  int64_t rank = 0;
  bool drop_last = false;
  int64_t block_size = 0;  // > 1: block shuffling (see DistributedSampler); use it for disk sources
  int64_t window = 0;      // block shuffling window; 0 = 8 blocks
  int64_t workers = 0;     // background threads preparing batches; 0 = prepared in next()
  int64_t prefetch = 4;    // batches prepared ahead of the consumer (with workers)
  BatchFormat format = BatchFormat::Csr;
  TokenizerOptions tokens;  // format Tokens; random truncation draws with seed tokens.seed + epoch
  c10::Device device = c10::Device(c10::kCPU);  // where batches are used: CUDA pins host memory
  bool pin_memory = true;                       // pin when device is CUDA and CUDA is available
};

struct Batch {
  int64_t epoch = 0;
  int64_t index = 0;  // batch number in the epoch on this rank
  at::Tensor cells;   // [n] int64: cell ids in the source
  CsrTensors csr;     // format Csr
  at::Tensor dense;   // format Dense: [n, genes] float32
  Tokens tokens;      // format Tokens
  int64_t size() const { return cells.defined() ? cells.size(0) : 0; }
};

class Loader {
 public:
  // Throws std::invalid_argument naming a bad option.
  Loader(std::shared_ptr<CellSource> source, const LoaderOptions& options);
  ~Loader();  // stops and joins the workers
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t batchesPerEpoch() const;
  const DistributedSampler& sampler() const;
  bool pinsMemory() const;  // whether batches are allocated in pinned memory

  // Begins `epoch` at batch `start_batch` (0 for a fresh epoch, the saved position to resume);
  // batches prefetched for an earlier start are discarded.
  void start(int64_t epoch, int64_t start_batch = 0);
  // The next batch of the epoch, nullopt at its end (or before the first start()).
  std::optional<Batch> next();

  struct Position {
    int64_t epoch = 0;
    int64_t batch = 0;  // the batch next() returns next
  };
  Position position() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace latentcell::data
