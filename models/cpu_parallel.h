// Work shared out over XLA:CPU's intra-op thread pool, for the FFI kernels of this directory
// (cpu_matmul.cc, cpu_attention.cc), with OpenBLAS kept single-threaded inside them.
//
// `ParallelFor(pool, n, body)` runs body(0) .. body(n - 1). Items are claimed from a shared
// counter by whichever thread is free, the calling thread included, so a call never waits on a
// task that no free thread will run (the pool may be busy with other ops of the step); the
// caller returns once every item is done. The state lives in a shared_ptr because a scheduled
// task may start after the last item is done and must still find it.

#ifndef MODELS_CPU_PARALLEL_H_
#define MODELS_CPU_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace cpu_kernels {

// OpenBLAS's own threads would compete with XLA's pool on a small machine: one thread, set once.
inline void UseOneOpenblasThread() {
  static const bool done = (scipy_openblas_set_num_threads(1), true);
  (void)done;
}

struct ParallelWork {
  std::function<void(int64_t)> body;
  int64_t n;
  std::atomic<int64_t> next{0}, done{0};

  void Work() {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      body(i);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Runs body(i) for i in [0, n) on up to `pool.num_threads()` threads plus the caller.
inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> body) {
  if (n <= 0) return;
  auto work = std::make_shared<ParallelWork>();
  work->body = std::move(body);
  work->n = n;
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(1, pool.num_threads()), n) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Work(); });
  work->Work();
  while (work->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace cpu_kernels

#endif  // MODELS_CPU_PARALLEL_H_
