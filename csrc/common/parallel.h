// CPU launcher: runs body(i) for i in [0, n) on ATen's intra-op thread pool (OpenMP when torch
// is built with it), so torch.set_num_threads governs handgeom too. Each index must own its
// outputs: bodies never race, and results do not depend on the thread count.
#pragma once

#include <ATen/Parallel.h>

#include "common/memory.h"

namespace handgeom {

// grain: indices per task; pick it so one task is worth ~10 us of work.
template <typename Body>
void parallel_for_cpu(int64_t n, int64_t grain, const Body& body) {
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

// The CPU launch policy handed to device-generic host code (see projection/projection.h); its
// CUDA twin is CudaLauncher in cuda_launch.cuh.
struct CpuLauncher {
  // grain: the fewest tasks worth a thread of their own; launches of no more tasks run inline,
  // since waking the pool costs more than a few microseconds of work (much more when the CPU
  // is oversubscribed and a pool thread has been descheduled).
  template <typename Body>
  void operator()(int64_t n, const Body& body, int64_t grain = 1) const { parallel_for_cpu(n, grain, body); }
  // Called on a freshly allocated output before the kernel writes it.
  void fresh_output(const at::Tensor& out) const { advise_huge_pages(out); }
  // body(g * size + i) for all i of a group run in order on one task: outputs a group shares
  // (shared_add) have a single writer, so the result is deterministic.
  template <typename Body>
  void grouped(int64_t groups, int64_t size, const Body& body) const {
    parallel_for_cpu(groups, 1, [&](int64_t g) {
      for (int64_t i = 0; i < size; ++i) body(g * size + i);
    });
  }
};

}  // namespace handgeom
