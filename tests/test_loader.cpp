// Tests for data/Loader: over an epoch each rank gets a disjoint share and together they cover every
// cell exactly once; every batch holds exactly the rows of its cells (shards and h5ad agree with the
// matrix); prefetch threads change nothing (same batches in the same order, every format); resuming
// mid-epoch yields exactly the remaining batches; read errors reach next(); the CPU path pins no memory.
#include "TestUtil.h"

#include "data/H5ad.h"
#include "data/Loader.h"
#include "data/ShardConvert.h"
#include "data/ShardDataset.h"
#include "data/Simulator.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

using namespace latentcell::data;
using latentcell::test::TempDir;

namespace {

// One simulated screen as h5ad and as shards, shared by the tests.
class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    SimulatorOptions o;
    o.cells = 960;
    o.genes = 40;
    o.seed = 9;
    adata_ = new AnnData(simulate(o));
    writeH5ad(*adata_, dir_->file("screen.h5ad"));
    ShardConvertOptions c;
    c.condition = "perturbation";
    c.control = "control";
    c.context = {"cell_type"};
    c.shard_cells = 300;
    convertH5adToShards(dir_->file("screen.h5ad"), dir_->file("shards"), c);
    shards_ = std::make_shared<const ShardDataset>(dir_->file("shards"));
  }
  static void TearDownTestSuite() {
    shards_.reset();
    delete adata_;
    delete dir_;
  }
  static std::shared_ptr<CellSource> shardSource() { return std::make_shared<ShardSource>(shards_); }
  static std::shared_ptr<CellSource> h5adSource() { return std::make_shared<H5adSource>(dir_->file("screen.h5ad")); }

  static LoaderOptions options(int64_t workers) {
    LoaderOptions o;
    o.batch_size = 64;
    o.seed = 3;
    o.block_size = 16;
    o.workers = workers;
    o.prefetch = 3;
    return o;
  }

  static std::vector<Batch> epoch(Loader& loader, int64_t e, int64_t start = 0) {
    loader.start(e, start);
    std::vector<Batch> out;
    while (auto b = loader.next()) out.push_back(std::move(*b));
    return out;
  }

  static TempDir* dir_;
  static AnnData* adata_;
  static std::shared_ptr<const ShardDataset> shards_;
};
TempDir* LoaderTest::dir_ = nullptr;
AnnData* LoaderTest::adata_ = nullptr;
std::shared_ptr<const ShardDataset> LoaderTest::shards_;

std::vector<int64_t> ids(const at::Tensor& cells) {
  return std::vector<int64_t>(cells.data_ptr<int64_t>(), cells.data_ptr<int64_t>() + cells.numel());
}

void expectSameBatches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_TRUE(torch::equal(a[i].cells, b[i].cells)) << "batch " << i;
    if (a[i].csr.indptr.defined()) {
      EXPECT_TRUE(torch::equal(a[i].csr.indptr, b[i].csr.indptr));
      EXPECT_TRUE(torch::equal(a[i].csr.indices, b[i].csr.indices));
      EXPECT_TRUE(torch::equal(a[i].csr.values, b[i].csr.values));
    }
    if (a[i].dense.defined()) {
      EXPECT_TRUE(torch::equal(a[i].dense, b[i].dense));
    }
    if (a[i].tokens.gene_ids.defined()) {
      EXPECT_TRUE(torch::equal(a[i].tokens.gene_ids, b[i].tokens.gene_ids));
      EXPECT_TRUE(torch::equal(a[i].tokens.counts, b[i].tokens.counts));
    }
  }
}

// The batch's CSR rows against the h5ad matrix, through `to_h5ad_row` (the source's cell numbering).
void expectRowsOf(const Batch& b, const CsrMatrix& x, const std::function<int64_t(int64_t)>& to_h5ad_row) {
  const auto cells = ids(b.cells);
  const int64_t* indptr = b.csr.indptr.data_ptr<int64_t>();
  const int32_t* indices = b.csr.indices.data_ptr<int32_t>();
  const float* values = b.csr.values.data_ptr<float>();
  ASSERT_EQ(b.csr.indptr.size(0), static_cast<int64_t>(cells.size()) + 1);
  for (size_t i = 0; i < cells.size(); ++i) {
    const int64_t r = to_h5ad_row(cells[i]);
    ASSERT_EQ(indptr[i + 1] - indptr[i], x.indptr[r + 1] - x.indptr[r]) << "cell " << cells[i];
    for (int64_t k = 0; k < indptr[i + 1] - indptr[i]; ++k) {
      ASSERT_EQ(indices[indptr[i] + k], x.indices[x.indptr[r] + k]);
      ASSERT_EQ(values[indptr[i] + k], x.data[x.indptr[r] + k]);
    }
  }
}

}  // namespace

TEST_F(LoaderTest, RanksPartitionEveryEpochAndBatchesHoldTheirRows) {
  for (int64_t world : {1, 3}) {
    std::vector<int64_t> seen;
    for (int64_t rank = 0; rank < world; ++rank) {
      auto o = options(2);
      o.world_size = world;
      o.rank = rank;
      Loader loader(shardSource(), o);
      const auto batches = epoch(loader, 2);
      EXPECT_EQ(static_cast<int64_t>(batches.size()), loader.batchesPerEpoch());
      for (const auto& b : batches) {
        EXPECT_LE(b.size(), 64);
        expectRowsOf(b, adata_->X, [](int64_t c) { return shards_->sourceRows()[c]; });
        const auto c = ids(b.cells);
        seen.insert(seen.end(), c.begin(), c.end());
      }
    }
    // 960 cells split evenly: every cell exactly once over all ranks.
    EXPECT_EQ(seen.size(), 960u) << "world " << world;
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 960u) << "world " << world;
  }
  // Different epochs are different orders; the same epoch is the same order.
  Loader loader(shardSource(), options(0));
  const auto e0 = epoch(loader, 0), e0b = epoch(loader, 0), e1 = epoch(loader, 1);
  EXPECT_TRUE(torch::equal(e0[0].cells, e0b[0].cells));
  EXPECT_FALSE(torch::equal(e0[0].cells, e1[0].cells));
}

TEST_F(LoaderTest, H5adSourceReadsTheSameRows) {
  Loader loader(h5adSource(), options(2));
  const auto batches = epoch(loader, 0);
  std::set<int64_t> seen;
  for (const auto& b : batches) {
    expectRowsOf(b, adata_->X, [](int64_t c) { return c; });
    for (int64_t c : ids(b.cells)) seen.insert(c);
  }
  EXPECT_EQ(seen.size(), 960u);
}

TEST_F(LoaderTest, PrefetchThreadsYieldTheSameBatches) {
  for (const auto format : {BatchFormat::Csr, BatchFormat::Dense, BatchFormat::Tokens}) {
    for (const bool from_h5ad : {false, true}) {
      auto sync = options(0), threaded = options(3);
      sync.format = threaded.format = format;
      sync.tokens.context_length = threaded.tokens.context_length = 40;
      Loader a(from_h5ad ? h5adSource() : shardSource(), sync);
      Loader b(from_h5ad ? h5adSource() : shardSource(), threaded);
      const auto ea = epoch(a, 1), eb = epoch(b, 1);
      expectSameBatches(ea, eb);
      if (format == BatchFormat::Dense) {
        // Dense rows are the CSR rows: check one batch against the dataset.
        const auto cells = ids(ea[0].cells);
        at::Tensor want = at::zeros({static_cast<int64_t>(cells.size()), 40});
        for (size_t i = 0; i < cells.size(); ++i) {
          const int64_t r = from_h5ad ? cells[i] : shards_->sourceRows()[cells[i]];
          for (int64_t k = adata_->X.indptr[r]; k < adata_->X.indptr[r + 1]; ++k)
            want[i][adata_->X.indices[k]] = adata_->X.data[k];
        }
        EXPECT_TRUE(torch::equal(ea[0].dense, want));
      }
      if (format == BatchFormat::Tokens) {
        TokenizerOptions t;
        t.context_length = 40;
        // Tokens of the batch's rows, read from the matrix itself.
        const auto cells = ids(ea[0].cells);
        std::vector<int64_t> rows;
        for (int64_t c : cells) rows.push_back(from_h5ad ? c : shards_->sourceRows()[c]);
        const Tokens want = tokenize(adata_->X, t, rows);
        EXPECT_TRUE(torch::equal(ea[0].tokens.gene_ids, want.gene_ids));
        EXPECT_TRUE(torch::equal(ea[0].tokens.counts, want.counts));
      }
    }
  }
}

TEST_F(LoaderTest, ResumingMidEpochYieldsTheRemainingBatches) {
  for (const int64_t workers : {0, 2}) {
    auto o = options(workers);
    o.world_size = 2;
    o.rank = 1;
    Loader full(shardSource(), o);
    const auto all = epoch(full, 4);
    ASSERT_EQ(all.size(), 8u);  // 480 cells on this rank, 64 a batch
    // Stop after 3 batches, as a checkpoint would, and resume from the saved position elsewhere.
    Loader first(shardSource(), o);
    first.start(4);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(first.next());
    const auto pos = first.position();
    EXPECT_EQ(pos.epoch, 4);
    EXPECT_EQ(pos.batch, 3);
    Loader resumed(shardSource(), o);
    const auto rest = epoch(resumed, pos.epoch, pos.batch);
    expectSameBatches(rest, std::vector<Batch>(all.begin() + 3, all.end()));
    // Restarting an epoch midway through discards what was prefetched for the old start.
    first.start(4, 6);
    const auto tail = [&] {
      std::vector<Batch> out;
      while (auto b = first.next()) out.push_back(std::move(*b));
      return out;
    }();
    expectSameBatches(tail, std::vector<Batch>(all.begin() + 6, all.end()));
  }
}

namespace {

// A source whose reads fail for one cell, to check that worker errors reach the consumer.
class FailingSource final : public CellSource {
 public:
  explicit FailingSource(std::shared_ptr<CellSource> inner) : inner_(std::move(inner)) {}
  int64_t cells() const override { return inner_->cells(); }
  int64_t genes() const override { return inner_->genes(); }
  CsrTensors read(std::span<const int64_t> cells, bool pinned) override {
    for (int64_t c : cells)
      if (c == 500) throw std::runtime_error("cannot read cell 500");
    return inner_->read(cells, pinned);
  }

 private:
  std::shared_ptr<CellSource> inner_;
};

}  // namespace

TEST_F(LoaderTest, ReadErrorsReachNextAtTheirBatch) {
  for (const int64_t workers : {0, 3}) {
    auto o = options(workers);
    o.shuffle = false;  // cell 500 is in batch 7
    Loader loader(std::make_shared<FailingSource>(shardSource()), o);
    loader.start(0);
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(loader.next()) << i;
    EXPECT_EQ(latentcell::test::errorOf([&] { loader.next(); }), "cannot read cell 500");
    EXPECT_TRUE(loader.next());  // batch 8 is fine
  }
}

TEST_F(LoaderTest, CpuBatchesAreNotPinnedAndOptionsAreChecked) {
  auto o = options(1);
  Loader cpu(shardSource(), o);
  EXPECT_FALSE(cpu.pinsMemory());
  cpu.start(0);
  const auto b = cpu.next();
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->csr.values.is_pinned());
  // A CUDA target pins only where CUDA exists (this build compiles the pinned path either way).
  o.device = c10::Device(c10::kCUDA);
  Loader cuda(shardSource(), o);
  EXPECT_EQ(cuda.pinsMemory(), torch::cuda::is_available());
  o.pin_memory = false;
  EXPECT_FALSE(Loader(shardSource(), o).pinsMemory());

  EXPECT_FALSE(Loader(shardSource(), options(0)).next()) << "no batch before start()";
  auto bad = options(0);
  bad.prefetch = 0;
  EXPECT_THROW(Loader(shardSource(), bad), std::invalid_argument);
  bad = options(0);
  bad.rank = 2;
  EXPECT_THROW(Loader(shardSource(), bad), std::invalid_argument);
  bad = options(0);
  bad.format = BatchFormat::Tokens;
  EXPECT_THROW(Loader(shardSource(), bad), std::invalid_argument);
  EXPECT_THROW(parseBatchFormat("coo"), std::invalid_argument);
  Loader l(shardSource(), options(0));
  EXPECT_THROW(l.start(0, 100), std::invalid_argument);
}
