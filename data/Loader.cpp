// Batches from shard or h5ad sources with background prefetch (see Loader.h).
#include "data/Loader.h"

#include "data/H5ad.h"
#include "data/ShardDataset.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/cuda.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace latentcell::data {
namespace {

at::TensorOptions hostOptions(at::ScalarType dtype, bool pinned) {
  return at::TensorOptions().dtype(dtype).pinned_memory(pinned);
}

CsrTensors emptyCsr(int64_t rows, int64_t nnz, bool pinned) {
  return {at::empty({rows + 1}, hostOptions(at::kLong, pinned)), at::empty({nnz}, hostOptions(at::kInt, pinned)),
          at::empty({nnz}, hostOptions(at::kFloat, pinned))};
}

CsrMatrix toCsrMatrix(const CsrTensors& t, int64_t genes) {
  CsrMatrix m;
  m.rows = t.indptr.size(0) - 1;
  m.cols = genes;
  const int64_t nnz = t.values.size(0);
  m.indptr.assign(t.indptr.data_ptr<int64_t>(), t.indptr.data_ptr<int64_t>() + m.rows + 1);
  m.indices.assign(t.indices.data_ptr<int32_t>(), t.indices.data_ptr<int32_t>() + nnz);
  m.data.assign(t.values.data_ptr<float>(), t.values.data_ptr<float>() + nnz);
  return m;
}

at::Tensor toDense(const CsrTensors& t, int64_t genes, bool pinned) {
  const int64_t rows = t.indptr.size(0) - 1;
  at::Tensor dense = at::empty({rows, genes}, hostOptions(at::kFloat, pinned));  // [cells, genes]
  float* out = dense.data_ptr<float>();
  std::fill_n(out, rows * genes, 0.0f);
  const int64_t* indptr = t.indptr.data_ptr<int64_t>();
  const int32_t* indices = t.indices.data_ptr<int32_t>();
  const float* values = t.values.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = indptr[r]; k < indptr[r + 1]; ++k) out[r * genes + indices[k]] = values[k];
  return dense;
}

}  // namespace

// Batches are assembled with plain loops into at::empty tensors, never with ATen kernels: those run
// on ATen's intra-op pool (OpenMP), and several loader threads each starting parallel regions on a
// busy machine oversubscribe the cores (measured: 10x slower on this 2-core machine under load).

// ---- sources ------------------------------------------------------------------------------------

ShardSource::ShardSource(std::shared_ptr<const ShardDataset> dataset) : dataset_(std::move(dataset)) {}
int64_t ShardSource::cells() const { return dataset_->cells(); }
int64_t ShardSource::genes() const { return dataset_->genes(); }

CsrTensors ShardSource::read(std::span<const int64_t> cells, bool pinned) {
  CsrTensors t = emptyCsr(static_cast<int64_t>(cells.size()), dataset_->gatherNnz(cells), pinned);
  dataset_->gatherInto(cells, t.indptr.data_ptr<int64_t>(), t.indices.data_ptr<int32_t>(), t.values.data_ptr<float>());
  return t;
}

struct H5adSource::Impl {
  std::mutex mutex;  // H5adRowReader holds HDF5 handles: one thread at a time
  H5adRowReader reader;
};

H5adSource::H5adSource(const std::string& path, const std::string& matrix)
    : impl_(new Impl{{}, H5adRowReader(path, matrix)}) {}
H5adSource::~H5adSource() = default;
int64_t H5adSource::cells() const { return impl_->reader.n_obs(); }
int64_t H5adSource::genes() const { return impl_->reader.n_vars(); }

CsrTensors H5adSource::read(std::span<const int64_t> cells, bool pinned) {
  const int64_t n_obs = impl_->reader.n_obs();
  for (int64_t c : cells)
    if (c < 0 || c >= n_obs) throw std::out_of_range(fmt::format("cell {} is outside [0, {})", c, n_obs));
  // Runs of consecutive cells, each read once.
  std::vector<int64_t> sorted(cells.begin(), cells.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  struct Run {
    int64_t begin, end;
    CsrMatrix rows;
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) ++j;
    runs.push_back({sorted[i], sorted[j - 1] + 1, {}});
    i = j;
  }
  {
    const std::lock_guard<std::mutex> lock(impl_->mutex);
    for (auto& run : runs) run.rows = impl_->reader.readRows(run.begin, run.end);
  }
  const auto locate = [&](int64_t cell) -> std::pair<const CsrMatrix*, int64_t> {
    const auto it = std::upper_bound(runs.begin(), runs.end(), cell, [](int64_t c, const Run& r) { return c < r.begin; });
    return {&(it - 1)->rows, cell - (it - 1)->begin};
  };
  int64_t nnz = 0;
  for (int64_t c : cells) {
    const auto [m, r] = locate(c);
    nnz += m->indptr[r + 1] - m->indptr[r];
  }
  CsrTensors t = emptyCsr(static_cast<int64_t>(cells.size()), nnz, pinned);
  int64_t* indptr = t.indptr.data_ptr<int64_t>();
  int32_t* indices = t.indices.data_ptr<int32_t>();
  float* values = t.values.data_ptr<float>();
  indptr[0] = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto [m, r] = locate(cells[i]);
    const int64_t lo = m->indptr[r], len = m->indptr[r + 1] - lo;
    std::memcpy(indices + indptr[i], m->indices.data() + lo, len * sizeof(int32_t));
    std::memcpy(values + indptr[i], m->data.data() + lo, len * sizeof(float));
    indptr[i + 1] = indptr[i] + len;
  }
  return t;
}

BatchFormat parseBatchFormat(const std::string& name) {
  if (name == "csr") return BatchFormat::Csr;
  if (name == "dense") return BatchFormat::Dense;
  if (name == "tokens") return BatchFormat::Tokens;
  throw std::invalid_argument("loader: unknown batch format '" + name + "' (choices: csr, dense, tokens)");
}

// ---- loader -------------------------------------------------------------------------------------

struct Loader::Impl {
  // One start(): this rank's remaining cells of the epoch, batch `first` onwards.
  struct Plan {
    int64_t epoch = 0;
    int64_t first = 0;  // batch number of cells[0]
    int64_t end = 0;    // one past the last batch number
    std::vector<int64_t> cells;
  };
  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  std::shared_ptr<CellSource> source;
  LoaderOptions options;
  DistributedSampler sampler;
  bool pinned = false;

  mutable std::mutex mutex;
  std::condition_variable changed;
  std::shared_ptr<const Plan> plan;
  uint64_t generation = 0;  // bumped by start(); results of an older generation are dropped
  int64_t claimed = 0;      // next batch number a worker takes
  int64_t consumed = 0;     // next batch number next() returns
  std::map<int64_t, Slot> ready;
  bool stopping = false;
  std::vector<std::thread> workers;

  Impl(std::shared_ptr<CellSource> s, const LoaderOptions& o, const SamplerOptions& so)
      : source(std::move(s)), options(o), sampler(so) {}

  // Batch k of `p`: a pure function of the plan and k.
  Batch make(const Plan& p, int64_t k) const {
    const int64_t b = options.batch_size;
    const int64_t lo = (k - p.first) * b;
    const int64_t hi = std::min<int64_t>(lo + b, static_cast<int64_t>(p.cells.size()));
    const std::span<const int64_t> ids(p.cells.data() + lo, hi - lo);
    Batch batch;
    batch.epoch = p.epoch;
    batch.index = k;
    batch.cells = at::empty({hi - lo}, at::kLong);  // [n]
    std::copy(ids.begin(), ids.end(), batch.cells.data_ptr<int64_t>());
    CsrTensors csr = source->read(ids, pinned && options.format == BatchFormat::Csr);
    switch (options.format) {
      case BatchFormat::Csr: batch.csr = std::move(csr); break;
      case BatchFormat::Dense: batch.dense = toDense(csr, source->genes(), pinned); break;
      case BatchFormat::Tokens: {
        TokenizerOptions t = options.tokens;
        t.seed = options.tokens.seed + static_cast<uint64_t>(p.epoch);
        batch.tokens = tokenize(toCsrMatrix(csr, source->genes()), t);
        if (pinned) {
          batch.tokens.gene_ids = batch.tokens.gene_ids.pin_memory();
          batch.tokens.counts = batch.tokens.counts.pin_memory();
          batch.tokens.padding_mask = batch.tokens.padding_mask.pin_memory();
        }
        break;
      }
    }
    return batch;
  }

  void work() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] {
        return stopping || (plan && claimed < plan->end && claimed < consumed + options.prefetch);
      });
      if (stopping) return;
      const std::shared_ptr<const Plan> p = plan;
      const uint64_t gen = generation;
      const int64_t k = claimed++;
      lock.unlock();
      Slot slot;
      try {
        slot.batch = make(*p, k);
      } catch (...) {
        slot.error = std::current_exception();
      }
      lock.lock();
      if (gen == generation) {
        ready[k] = std::move(slot);
        changed.notify_all();
      }
    }
  }
};

Loader::Loader(std::shared_ptr<CellSource> source, const LoaderOptions& o) {
  if (!source) throw std::invalid_argument("loader: no source");
  if (o.workers < 0 || o.prefetch < 1)
    throw std::invalid_argument(
        fmt::format("loader: workers must be >= 0 and prefetch >= 1, got {} and {}", o.workers, o.prefetch));
  SamplerOptions so;
  so.size = source->cells();
  so.world_size = o.world_size;
  so.rank = o.rank;
  so.batch_size = o.batch_size;
  so.shuffle = o.shuffle;
  so.seed = o.seed;
  so.drop_last = o.drop_last;
  so.block_size = o.block_size;
  so.window = o.window;
  impl_ = std::make_unique<Impl>(std::move(source), o, so);  // the sampler validates the rest
  if (o.format == BatchFormat::Tokens && o.tokens.context_length < 1)
    throw std::invalid_argument("loader: format tokens needs tokens.context_length >= 1");
  impl_->pinned = o.pin_memory && o.device.is_cuda() && torch::cuda::is_available();
  for (int64_t w = 0; w < o.workers; ++w) impl_->workers.emplace_back([this] { impl_->work(); });
}

Loader::~Loader() {
  {
    const std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->changed.notify_all();
  for (auto& t : impl_->workers) t.join();
}

int64_t Loader::batchesPerEpoch() const { return impl_->sampler.batchesPerEpoch(); }
const DistributedSampler& Loader::sampler() const { return impl_->sampler; }
bool Loader::pinsMemory() const { return impl_->pinned; }

void Loader::start(int64_t epoch, int64_t start_batch) {
  if (epoch < 0) throw std::invalid_argument(fmt::format("loader: epoch must be >= 0, got {}", epoch));
  auto p = std::make_shared<Impl::Plan>();
  p->epoch = epoch;
  p->first = start_batch;
  p->end = impl_->sampler.batchesPerEpoch();
  p->cells = impl_->sampler.indices(epoch, start_batch);  // validates start_batch
  {
    const std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->plan = std::move(p);
    ++impl_->generation;
    impl_->claimed = impl_->consumed = start_batch;
    impl_->ready.clear();
  }
  impl_->changed.notify_all();
}

std::optional<Batch> Loader::next() {
  Impl& m = *impl_;
  std::unique_lock<std::mutex> lock(m.mutex);
  if (!m.plan || m.consumed >= m.plan->end) return std::nullopt;
  const int64_t k = m.consumed;
  if (m.workers.empty()) {
    ++m.consumed;
    const std::shared_ptr<const Impl::Plan> p = m.plan;
    lock.unlock();
    return m.make(*p, k);
  }
  m.changed.wait(lock, [&] { return m.ready.count(k) > 0; });
  Impl::Slot slot = std::move(m.ready.at(k));
  m.ready.erase(k);
  ++m.consumed;
  m.changed.notify_all();
  lock.unlock();
  if (slot.error) std::rethrow_exception(slot.error);
  return std::move(slot.batch);
}

Loader::Position Loader::position() const {
  const std::lock_guard<std::mutex> lock(impl_->mutex);
  return {impl_->plan ? impl_->plan->epoch : 0, impl_->consumed};
}

}  // namespace latentcell::data
