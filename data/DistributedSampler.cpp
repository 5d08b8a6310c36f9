// Epoch orders and rank shares (see DistributedSampler.h).
#include "data/DistributedSampler.h"

#include "core/Random.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace latentcell::data {
namespace {

// A permutation of 0..n-1 from `gen`, through at::randperm so that it equals torch.randperm with
// a generator in the same state.
std::vector<int64_t> randperm(int64_t n, at::Generator& gen) {
  const at::Tensor p = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
  const int64_t* ptr = p.data_ptr<int64_t>();
  return std::vector<int64_t>(ptr, ptr + n);
}

}  // namespace

DistributedSampler::DistributedSampler(const SamplerOptions& options) : options_(options) {
  const auto& o = options_;
  if (o.size < 0) throw std::invalid_argument(fmt::format("sampler: size must be >= 0, got {}", o.size));
  if (o.world_size < 1)
    throw std::invalid_argument(fmt::format("sampler: world_size must be >= 1, got {}", o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    throw std::invalid_argument(
        fmt::format("sampler: rank must be in [0, {}), got {}", o.world_size, o.rank));
  if (o.batch_size < 1)
    throw std::invalid_argument(fmt::format("sampler: batch_size must be >= 1, got {}", o.batch_size));
  if (o.block_size < 0 || o.window < 0)
    throw std::invalid_argument(fmt::format("sampler: block_size and window must be >= 0, got {} and {}",
                                            o.block_size, o.window));
  samples_per_rank_ = o.drop_last ? o.size / o.world_size : (o.size + o.world_size - 1) / o.world_size;
}

int64_t DistributedSampler::batchesPerEpoch() const {
  return (samples_per_rank_ + options_.batch_size - 1) / options_.batch_size;
}

std::vector<int64_t> DistributedSampler::epochOrder(int64_t epoch) const {
  const auto& o = options_;
  const int64_t n = o.size;
  std::vector<int64_t> order;
  if (!o.shuffle) {
    order.resize(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
  } else {
    // torch.utils.data.DistributedSampler seeds with seed + epoch; so do we, for parity.
    at::Generator gen = core::makeGenerator(o.seed + static_cast<uint64_t>(epoch));
    if (o.block_size <= 1) {
      order = randperm(n, gen);
    } else {
      const int64_t b = o.block_size;
      const int64_t blocks = (n + b - 1) / b;
      order.reserve(n);
      for (int64_t blk : randperm(blocks, gen))
        for (int64_t i = blk * b; i < std::min(n, (blk + 1) * b); ++i) order.push_back(i);
      const int64_t w = o.window > 0 ? o.window : b * 8;
      for (int64_t start = 0; start < n; start += w) {
        const int64_t len = std::min(w, n - start);
        const std::vector<int64_t> p = randperm(len, gen);
        std::vector<int64_t> window(order.begin() + start, order.begin() + start + len);
        for (int64_t i = 0; i < len; ++i) order[start + i] = window[p[i]];
      }
    }
  }
  const int64_t total = samples_per_rank_ * o.world_size;
  if (total <= n) {
    order.resize(total);
  } else if (n > 0) {
    // Repeat from the start, as torch does, so that padding duplicates as few cells as possible.
    for (int64_t i = 0; static_cast<int64_t>(order.size()) < total; ++i) order.push_back(order[i % n]);
  }
  return order;
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch, int64_t start_batch) const {
  const auto& o = options_;
  if (start_batch < 0 || start_batch > batchesPerEpoch())
    throw std::invalid_argument(fmt::format("sampler: start_batch must be in [0, {}], got {}",
                                            batchesPerEpoch(), start_batch));
  const std::vector<int64_t> order = epochOrder(epoch);
  std::vector<int64_t> mine;
  mine.reserve(samples_per_rank_);
  if (o.shuffle && o.block_size > 1) {
    const int64_t first = o.rank * samples_per_rank_;
    mine.assign(order.begin() + first, order.begin() + first + samples_per_rank_);
  } else {
    for (int64_t i = o.rank; i < static_cast<int64_t>(order.size()); i += o.world_size) mine.push_back(order[i]);
  }
  const int64_t skip = std::min<int64_t>(start_batch * o.batch_size, static_cast<int64_t>(mine.size()));
  return std::vector<int64_t>(mine.begin() + skip, mine.end());
}

SamplerCursor::SamplerCursor(const SamplerOptions& options) : sampler_(options), order_(sampler_.indices(0, 0)) {}

std::vector<int64_t> SamplerCursor::next() {
  if (cursor_ >= static_cast<int64_t>(order_.size())) {
    ++epoch_;
    batch_ = 0;
    order_ = sampler_.indices(epoch_, 0);
    cursor_ = 0;
  }
  const int64_t n = std::min<int64_t>(sampler_.options().batch_size, static_cast<int64_t>(order_.size()) - cursor_);
  std::vector<int64_t> out(order_.begin() + cursor_, order_.begin() + cursor_ + n);
  cursor_ += n;
  ++batch_;
  return out;
}

void SamplerCursor::restore(int64_t epoch, int64_t batch) {
  epoch_ = epoch;
  batch_ = batch;
  order_ = sampler_.indices(epoch_, batch_);
  cursor_ = 0;
}

}  // namespace latentcell::data
