// Coarse-grained parallel loops (see Parallel.h): std::threads pulling items from a shared counter.
#include "eval/Parallel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace latentcell::eval {

void parallelFor(int64_t n, int threads, const std::function<void(int64_t)>& body) {
  const int64_t workers = std::min<int64_t>(std::max(threads, 1), n);
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  int64_t errorItem = n;
  std::mutex errorMutex;
  auto work = [&] {
    for (int64_t i; !failed.load() && (i = next.fetch_add(1)) < n;) {
      try {
        body(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(errorMutex);
        if (i < errorItem) error = std::current_exception(), errorItem = i;
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  // A new thread starts with OpenMP's default team size; init_num_threads gives it ATen's (1 in
  // `latentcell evaluate`), so oneDNN kernels called on it do not open teams of their own.
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back([&] {
    at::init_num_threads();
    work();
  });
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace latentcell::eval
