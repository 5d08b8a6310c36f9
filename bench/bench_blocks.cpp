// Forward throughput of the core blocks at the scLDM encoder's shapes on the CPU: MCAB pooling
// of padded gene tokens (masked SDPA path) against the same call without a mask, and a DiT block.
// Run: build/bench/bench_blocks --benchmark_min_time=1s
#include "core/DitBlock.h"
#include "core/Mcab.h"

#include <benchmark/benchmark.h>
#include <torch/torch.h>

using namespace latentcell::core;

namespace {

// Cells of `tokens` expressed-gene slots, a quarter of them padding, pooled into 64 latent tokens.
void BM_McabPooling(benchmark::State& state) {
  torch::NoGradGuard ng;
  const int64_t batch = 64, tokens = state.range(0), dim = 128;
  const bool masked = state.range(1) != 0;
  Mcab pool(McabOptions{dim, dim, 4, 64});
  pool->eval();
  auto kv = torch::randn({batch, tokens, dim});
  auto pad = torch::arange(tokens).ge(tokens * 3 / 4).unsqueeze(0).expand({batch, tokens}).contiguous();
  for (auto _ : state) benchmark::DoNotOptimize(pool(kv, masked ? pad : torch::Tensor()));
  state.SetItemsProcessed(state.iterations() * batch);  // cells
}
BENCHMARK(BM_McabPooling)->Args({256, 0})->Args({256, 1})->Args({1024, 1})->Unit(benchmark::kMillisecond);

void BM_DitBlock(benchmark::State& state) {
  torch::NoGradGuard ng;
  const int64_t batch = 64, tokens = state.range(0), dim = 256;
  DitBlock block(DitBlockOptions{dim, 8});
  block->eval();
  auto x = torch::randn({batch, tokens, dim});
  auto c = torch::randn({batch, dim});
  for (auto _ : state) benchmark::DoNotOptimize(block(x, c));
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_DitBlock)->Arg(64)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
