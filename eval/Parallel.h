// Coarse-grained CPU parallelism for the evaluators: independent work items (perturbations,
// conditions, DE targets, row blocks) spread over threads, each item running its ATen ops serially.
//
// Why not ATen's own intra-op threading: an evaluation is thousands of small and medium ops
// separated by host code, and idle OpenMP workers spin between them; on a shared machine the
// spinning steals the cores the work needs (measured 3x the wall time at 2 threads). Nor an OpenMP
// loop over items: inside it, fbgemm's radix sort and MKL (which ATen sets to non-dynamic) open
// nested teams and oversubscribe the cores. So `latentcell evaluate` keeps ATen at 1 thread and
// passes its --threads here, and parallelFor runs items on plain threads, where ATen at 1 thread
// never forks.
#pragma once

#include <cstdint>
#include <functional>

namespace latentcell::eval {

// body(i) for every i in [0, n), items handed out in order, one at a time, to `threads` threads (the
// caller included); threads <= 1 runs them in order on the caller. After an exception no new item
// starts; once all threads have stopped, the exception of the lowest failing item is rethrown, so
// errors are reported as a serial loop would report them.
void parallelFor(int64_t n, int threads, const std::function<void(int64_t)>& body);

}  // namespace latentcell::eval
