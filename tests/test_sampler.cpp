// Tests for data/DistributedSampler: ranks are disjoint and cover every cell, orders are fixed by
// (seed, epoch), resuming mid-epoch gives exactly the remaining suffix, block shuffling keeps blocks
// together, and the plain order equals torch.utils.data.DistributedSampler's
// (tests/python/sampler_reference.py).
#include "data/DistributedSampler.h"

#include "TestUtil.h"
#include "core/Safetensors.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <set>

using latentcell::data::DistributedSampler;
using latentcell::data::SamplerOptions;

namespace {

SamplerOptions opts(int64_t size, int64_t world, int64_t rank, uint64_t seed = 1) {
  SamplerOptions o;
  o.size = size;
  o.world_size = world;
  o.rank = rank;
  o.seed = seed;
  return o;
}

std::vector<std::vector<int64_t>> allRanks(SamplerOptions o, int64_t epoch) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t r = 0; r < o.world_size; ++r) {
    o.rank = r;
    out.push_back(DistributedSampler(o).indices(epoch));
  }
  return out;
}

}  // namespace

TEST(Sampler, RanksDisjointAndCoverAllCells) {
  for (bool blocks : {false, true}) {
    SCOPED_TRACE(blocks ? "block shuffling" : "plain");
    SamplerOptions o = opts(1000, 4, 0);
    if (blocks) o.block_size = 16;
    const auto parts = allRanks(o, 3);
    std::set<int64_t> seen;
    for (const auto& p : parts) {
      EXPECT_EQ(static_cast<int64_t>(p.size()), 250);
      for (int64_t i : p) EXPECT_TRUE(seen.insert(i).second) << "index " << i << " on two ranks";
    }
    EXPECT_EQ(seen.size(), 1000u);
    EXPECT_EQ(*seen.begin(), 0);
    EXPECT_EQ(*seen.rbegin(), 999);
  }
}

TEST(Sampler, PadOrDropMakesRanksEqual) {
  SamplerOptions o = opts(10, 4, 0);
  auto padded = allRanks(o, 0);
  std::multiset<int64_t> all;
  for (const auto& p : padded) {
    EXPECT_EQ(p.size(), 3u);
    all.insert(p.begin(), p.end());
  }
  EXPECT_EQ(all.size(), 12u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 10u);  // every cell, two repeated

  o.drop_last = true;
  auto dropped = allRanks(o, 0);
  std::set<int64_t> kept;
  for (const auto& p : dropped) {
    EXPECT_EQ(p.size(), 2u);
    for (int64_t i : p) EXPECT_TRUE(kept.insert(i).second);
  }
  EXPECT_EQ(kept.size(), 8u);
}

TEST(Sampler, SameSeedSameOrderDifferentEpochOrSeedDiffers) {
  for (int64_t block : {0, 8}) {
    SamplerOptions o = opts(500, 2, 1, 7);
    o.block_size = block;
    DistributedSampler s(o);
    EXPECT_EQ(s.indices(2), DistributedSampler(o).indices(2));
    EXPECT_NE(s.indices(2), s.indices(3));
    o.seed = 8;
    EXPECT_NE(s.indices(2), DistributedSampler(o).indices(2));
  }
}

TEST(Sampler, NoShuffleKeepsOrder) {
  SamplerOptions o = opts(7, 2, 1);
  o.shuffle = false;
  EXPECT_EQ(DistributedSampler(o).indices(5), (std::vector<int64_t>{1, 3, 5, 0}));
}

TEST(Sampler, ResumeMidEpochGivesRemainingSuffix) {
  for (int64_t block : {0, 10}) {
    SamplerOptions o = opts(1003, 3, 2, 11);
    o.batch_size = 32;
    o.block_size = block;
    DistributedSampler s(o);
    const auto full = s.indices(4);
    EXPECT_EQ(s.batchesPerEpoch(), (s.samplesPerRank() + 31) / 32);
    for (int64_t start : {int64_t{0}, int64_t{1}, int64_t{5}, s.batchesPerEpoch() - 1, s.batchesPerEpoch()}) {
      const auto rest = s.indices(4, start);
      const int64_t skip = std::min<int64_t>(start * 32, static_cast<int64_t>(full.size()));
      EXPECT_EQ(rest, std::vector<int64_t>(full.begin() + skip, full.end())) << "start batch " << start;
    }
    EXPECT_THROW(s.indices(4, s.batchesPerEpoch() + 1), std::invalid_argument);
  }
}

// The training loop's view: batches in epoch order, a short last batch, then the next epoch; and a
// cursor restored from (epoch, batch) continues with exactly the batches a straight walk gives.
TEST(Sampler, CursorWalksEpochsAndResumesExactly) {
  SamplerOptions o;
  o.size = 10;
  o.batch_size = 4;
  o.seed = 3;
  latentcell::data::SamplerCursor straight(o);
  const DistributedSampler sampler(o);
  std::vector<std::vector<int64_t>> batches;
  std::vector<std::pair<int64_t, int64_t>> states;
  for (int i = 0; i < 8; ++i) {
    batches.push_back(straight.next());
    states.emplace_back(straight.epoch(), straight.batch());
  }
  // Epoch 0 is the sampler's order in batches of 4, 4, 2; epoch 1 starts a new order.
  const auto e0 = sampler.indices(0), e1 = sampler.indices(1);
  EXPECT_EQ(batches[0], std::vector<int64_t>(e0.begin(), e0.begin() + 4));
  EXPECT_EQ(batches[2], std::vector<int64_t>(e0.begin() + 8, e0.end()));
  EXPECT_EQ(batches[3], std::vector<int64_t>(e1.begin(), e1.begin() + 4));
  EXPECT_EQ(states[2], (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(states[3], (std::pair<int64_t, int64_t>{1, 1}));
  for (size_t k = 0; k + 1 < batches.size(); ++k) {
    latentcell::data::SamplerCursor resumed(o);
    resumed.restore(states[k].first, states[k].second);
    for (size_t j = k + 1; j < batches.size(); ++j) EXPECT_EQ(resumed.next(), batches[j]) << "resumed after " << k;
  }
}

TEST(Sampler, BlockShufflingKeepsBlocksLocal) {
  // With the window equal to one block, every block stays contiguous in the epoch order.
  SamplerOptions o = opts(100, 1, 0, 3);
  o.block_size = 10;
  o.window = 10;
  const auto order = DistributedSampler(o).epochOrder(0);
  ASSERT_EQ(order.size(), 100u);
  for (int64_t start = 0; start < 100; start += 10) {
    const int64_t blk = order[start] / 10;
    for (int64_t i = start; i < start + 10; ++i) EXPECT_EQ(order[i] / 10, blk) << "position " << i;
  }
  // The block order itself is shuffled.
  bool moved = false;
  for (int64_t start = 0; start < 100; start += 10) moved |= order[start] / 10 != start / 10;
  EXPECT_TRUE(moved);
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(DistributedSampler(opts(10, 0, 0)), std::invalid_argument);
  EXPECT_THROW(DistributedSampler(opts(10, 2, 2)), std::invalid_argument);
  SamplerOptions o = opts(10, 1, 0);
  o.batch_size = 0;
  EXPECT_THROW((DistributedSampler(o)), std::invalid_argument);
  // An empty dataset is valid and yields nothing.
  EXPECT_TRUE(DistributedSampler(opts(0, 2, 1)).indices(0).empty());
}

TEST(Sampler, PlainOrderMatchesTorchDistributedSampler) {
  LATENTCELL_REQUIRE_PYTHON();
  latentcell::test::TempDir dir;
  const std::string out = dir.file("ref.safetensors");
  ASSERT_EQ(latentcell::test::runPython("tests/python/sampler_reference.py", "'" + out + "'"), 0);
  const auto ref = latentcell::core::loadSafetensors(out);
  const int cases[][5] = {{103, 4, 7, 0, 0}, {103, 4, 7, 3, 1}, {50, 3, 0, 1, 0}, {10, 1, 42, 2, 0}};
  for (const auto& c : cases) {
    for (int r = 0; r < c[1]; ++r) {
      SamplerOptions o = opts(c[0], c[1], r, c[2]);
      o.drop_last = c[4] != 0;
      const std::string name = fmt::format("n{}_w{}_r{}_s{}_e{}_d{}", c[0], c[1], r, c[2], c[3], c[4]);
      const at::Tensor want = ref.at(name);
      const auto got = DistributedSampler(o).indices(c[3]);
      ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel()) << name;
      EXPECT_TRUE(torch::equal(torch::tensor(got, torch::kLong), want)) << name;
    }
  }
}
