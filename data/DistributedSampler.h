// Which cells each rank visits in an epoch.
//
// Every rank builds the same epoch order from (seed, epoch) alone, so ranks agree without talking,
// and then takes its own disjoint share. Two orders:
// - plain: a permutation of all cells, drawn like torch.utils.data.DistributedSampler (randperm with
//   a CPU generator seeded seed + epoch; rank r takes positions r, r + world, ...), so a LibTorch run
//   and a PyTorch run over the same data see the same cells;
// - block shuffling, for data read from disk: the cells are cut into blocks of `block_size`
//   contiguous indices, the blocks are permuted and the indices are then permuted within windows of
//   `window` positions. A batch then touches few blocks (few contiguous reads) while staying well
//   mixed. Ranks take contiguous runs of the order here, so each keeps whole blocks.
// Ranks get equal counts (collectives need the same number of steps everywhere): the tail is padded
// by repeating the order from its start, or dropped. `indices(epoch, start_batch)` resumes a run
// mid-epoch by returning exactly the indices after the batches already consumed.
#pragma once

#include <cstdint>
#include <vector>

namespace latentcell::data {

struct SamplerOptions {
  int64_t size = 0;        // number of cells
  int64_t world_size = 1;  // number of ranks
  int64_t rank = 0;
  int64_t batch_size = 1;  // cells per batch on one rank (for resuming by batch)
  bool shuffle = true;     // false: cells in order (still split between ranks)
  uint64_t seed = 0;
  bool drop_last = false;  // true: drop the tail that does not fill every rank; false: pad it
  int64_t block_size = 0;  // > 1 turns on block shuffling
  int64_t window = 0;      // block mode: positions shuffled together; 0 = block_size * 8
};

class DistributedSampler {
 public:
  // Throws std::invalid_argument naming the bad option.
  explicit DistributedSampler(const SamplerOptions& options);

  // Cells this rank visits per epoch (the same on every rank).
  int64_t samplesPerRank() const { return samples_per_rank_; }
  // Batches per epoch on this rank; the last one may be short.
  int64_t batchesPerEpoch() const;
  // This rank's indices for `epoch`, skipping the first `start_batch` batches.
  std::vector<int64_t> indices(int64_t epoch, int64_t start_batch = 0) const;
  // The whole epoch order before it is split between ranks (padded or trimmed to
  // samplesPerRank() * world_size).
  std::vector<int64_t> epochOrder(int64_t epoch) const;

  const SamplerOptions& options() const { return options_; }

 private:
  SamplerOptions options_;
  int64_t samples_per_rank_ = 0;
};

// Walks a sampler's epochs batch by batch for a training loop: the positions (into the sampled range)
// of the next batch, moving to the next epoch when one is used up. (epoch, batch) is what a
// checkpoint stores; restoring it resumes at exactly the batch that would have come next.
class SamplerCursor {
 public:
  explicit SamplerCursor(const SamplerOptions& options);

  std::vector<int64_t> next();         // up to batch_size positions; the last batch of an epoch may be short
  int64_t epoch() const { return epoch_; }  // the epoch of the batch last returned (or the next one)
  int64_t batch() const { return batch_; }  // batches of that epoch returned so far
  void restore(int64_t epoch, int64_t batch);

 private:
  DistributedSampler sampler_;
  std::vector<int64_t> order_;
  int64_t epoch_ = 0, batch_ = 0, cursor_ = 0;
};

}  // namespace latentcell::data
