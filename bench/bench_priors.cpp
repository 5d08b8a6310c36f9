// Generation throughput of the stage-2 priors on the CPU (cells per second, reported as
// items_per_second), for one small config shared by every family: a DiT of width 128, 4 blocks,
// 4 heads, conditioned on two columns, generating 64 cells per call. Latents are ExpressionVAE's
// shape scaled down: L = 16 tokens (codebook 512 for the discrete priors, width 8 for the continuous
// ones); the transport prior moves sets of 64 cells whose latent is the flattened 16 x 8.
// The autoregressive prior also runs at L = 64 (ExpressionVAE's length) with and without the KV
// cache. Weights are random (N(0, 0.02^2)) so that the flow field is not zero and dopri5 takes a
// realistic number of steps; the evaluations per call are reported as a counter.
// Run: OMP_NUM_THREADS=1 build/bench/bench_priors --benchmark_min_time=2
#include "core/Random.h"
#include "priors/PriorFactory.h"

#include <benchmark/benchmark.h>
#include <torch/torch.h>

using namespace latentcell::priors;

namespace {

constexpr int64_t kCells = 64;
constexpr int64_t kTokens = 16;
constexpr int64_t kLatentDim = 8;
constexpr int64_t kCodebook = 512;

std::shared_ptr<Prior> makeBenchPrior(const std::string& kind, int64_t tokens, PriorConfig config = {}) {
  config.kind = kind;
  config.backbone.dim = 128;
  config.backbone.depth = 4;
  config.backbone.heads = 4;
  std::vector<ConditionColumnSpec> columns{ConditionColumnSpec{"cell_type", {"a", "b", "c"}, {}, {}},
                                           ConditionColumnSpec{"perturbation", {"ctrl", "g1", "g2", "g3"}, {}, {}}};
  const bool codes = latentKindOf(kind) == LatentKind::Codes;
  auto prior = makePrior(config, PriorContext{codes ? LatentKind::Codes : LatentKind::Continuous, "", tokens,
                                              kLatentDim, kCodebook, columns});
  torch::NoGradGuard ng;
  auto gen = latentcell::core::makeGenerator(1);
  for (auto& p : prior->parameters()) p.copy_(torch::randn(p.sizes(), gen) * 0.02);
  prior->eval();
  return prior;
}

void run(benchmark::State& state, Prior& prior, const SampleRequest& request, const SamplerOptions& options,
         int64_t cells_per_call) {
  auto gen = latentcell::core::makeGenerator(2);
  for (auto _ : state) benchmark::DoNotOptimize(prior.sample(request, request.control.defined() ? 1 : kCells, options, gen));
  state.SetItemsProcessed(state.iterations() * cells_per_call);
  state.counters["evaluations"] = static_cast<double>(prior.lastEvaluations());
}

SampleRequest conditions() { return SampleRequest{torch::tensor({1, 2}, torch::kLong), {}}; }

// Args: latent tokens L, KV cache on/off.
void BM_ArGenerate(benchmark::State& state) {
  auto prior = makeBenchPrior("ar", state.range(0));
  SamplerOptions o = prior->defaultSamplerOptions();
  o.kv_cache = state.range(1) != 0;
  run(state, *prior, conditions(), o, kCells);
}
BENCHMARK(BM_ArGenerate)->ArgNames({"L", "kv_cache"})->Args({16, 1})->Args({16, 0})->Args({64, 1})->Args({64, 0})
    ->Unit(benchmark::kMillisecond);

// Arg: denoising steps (ExpressionVAE uses 128; most steps reuse the previous prediction).
void BM_MdlmGenerate(benchmark::State& state) {
  auto prior = makeBenchPrior("mdlm", kTokens);
  SamplerOptions o = prior->defaultSamplerOptions();
  o.steps = state.range(0);
  run(state, *prior, conditions(), o, kCells);
}
BENCHMARK(BM_MdlmGenerate)->ArgNames({"steps"})->Arg(16)->Arg(128)->Unit(benchmark::kMillisecond);

// Args: solver (0 euler 100 steps, 1 heun 50 steps, 2 dopri5 at 1e-5), guidance weight x 10.
void BM_FlowGenerate(benchmark::State& state) {
  auto prior = makeBenchPrior("flow", kTokens);
  SamplerOptions o = prior->defaultSamplerOptions();
  const OdeMethod methods[] = {OdeMethod::Euler, OdeMethod::Heun, OdeMethod::Dopri5};
  o.solver = methods[state.range(0)];
  o.steps = o.solver == OdeMethod::Heun ? 50 : 100;
  o.guidance = static_cast<double>(state.range(1)) / 10.0;
  run(state, *prior, conditions(), o, kCells);
}
BENCHMARK(BM_FlowGenerate)->ArgNames({"solver", "w_x10"})->Args({0, 10})->Args({1, 10})->Args({2, 10})->Args({0, 20})
    ->Unit(benchmark::kMillisecond);

// One set of 64 control cells transported with the 50-step Heun sampler (x-pred, seed token).
void BM_JitGenerate(benchmark::State& state) {
  auto prior = makeBenchPrior("jit", kTokens);
  SampleRequest request{torch::tensor({1, 2}, torch::kLong), torch::randn({1, kCells, kTokens * kLatentDim})};
  run(state, *prior, request, prior->defaultSamplerOptions(), kCells);
}
BENCHMARK(BM_JitGenerate)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
