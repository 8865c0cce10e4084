// Runs a parallel loop on XLA's intra-op thread pool, for the FFI kernels of this directory.
#ifndef KEXUE_JAX_CPU_PARALLEL_FOR_H_
#define KEXUE_JAX_CPU_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace kexue {

// Runs task(0 … count − 1) on the caller and XLA's intra-op thread pool. The caller claims
// tasks too and returns when every task has finished; a helper that starts after the work
// is gone touches nothing but the shared counters, so a busy pool cannot deadlock it.
struct Progress {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
};

// Claims and runs tasks until none is left; wakes the caller when the last one finishes.
inline void drain(Progress& progress, int64_t count,
                  const std::function<void(int64_t)>& task) {
  for (int64_t i; (i = progress.next.fetch_add(1)) < count;) {
    task(i);
    if (progress.done.fetch_add(1) + 1 == count) {
      std::lock_guard<std::mutex> lock(progress.mutex);
      progress.finished.notify_all();
    }
  }
}

inline void parallel_for(xla::ffi::ThreadPool& pool, int64_t count,
                         const std::function<void(int64_t)>& task) {
  if (count <= 0) return;
  auto progress = std::make_shared<Progress>();
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    // A helper may start after this call has returned: it holds `progress`, and reaches
    // `task` only by claiming a task, which keeps this call waiting until it is done.
    pool.Schedule([progress, count, task_ptr = &task]() { drain(*progress, count, *task_ptr); });
  }
  drain(*progress, count, task);
  std::unique_lock<std::mutex> lock(progress->mutex);
  progress->finished.wait(lock, [&] { return progress->done.load() == count; });
}

}  // namespace kexue

#endif  // KEXUE_JAX_CPU_PARALLEL_FOR_H_
