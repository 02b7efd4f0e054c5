// Host-memory helpers for CPU launchers.
#pragma once

#include <ATen/ATen.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace handgeom {

// Asks Linux to back a fresh, large CPU output with transparent huge pages before the kernel first
// touches it. torch's CPU allocator returns large buffers to the OS on free, so every call
// page-faults its output in again; with 4 KiB pages those faults cost more than the kernel's own
// arithmetic (measured in benchmarks/bench_projection.py: 160 MB in 16-18 ms instead of 45-60 ms
// in steady state). On the VMs measured, the first ~1 GB of huge pages a process touches is
// slower (~200 ms per 160 MB, the host backing fresh memory); steady state is what training sees.
// A no-op where THP is off or on other systems; only whole 2 MiB-aligned pages are advised.
inline void advise_huge_pages(const at::Tensor& fresh) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(fresh.data_ptr());
  const uintptr_t end = begin + uintptr_t(fresh.nbytes());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = end & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)fresh;
#endif
}

}  // namespace handgeom
