// CUDA launcher: runs body(i) for i in [0, n) with a grid-stride loop on the current stream.
// Included only by .cu files; the kernel template is instantiated and launched in the same
// translation unit, which nvcc 13's hidden-visibility default for __global__ requires.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <type_traits>

namespace handgeom {

// A body whose threads all read one read-only array (network weights) can name it: `staged()`
// (device pointer), `staged_count()` (elements) and `restaged(p)` (a copy reading it from p). The
// kernel then copies it to shared memory once per block, when it fits.
template <typename Body>
concept Staged = requires(const Body& b) {
  b.staged();
  b.staged_count();
};

template <typename Body, typename T>
__global__ void grid_stride_kernel(int64_t n, Body body, const T* staged, int64_t staged_count) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (Staged<Body>) {
    if (staged) {
      extern __shared__ __align__(16) unsigned char shared_bytes[];
      T* shared = reinterpret_cast<T*>(shared_bytes);
      for (int64_t i = threadIdx.x; i < staged_count; i += blockDim.x) shared[i] = staged[i];
      __syncthreads();
      const Body local = body.restaged(shared);
      for (int64_t i = first; i < n; i += stride) local(i);
      return;
    }
  }
  for (int64_t i = first; i < n; i += stride) body(i);
}

template <typename Body>
void parallel_for_cuda(int64_t n, const Body& body) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, stream.device_index()));
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(sms) * 32);
  if constexpr (Staged<Body>) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(body.staged())>>;
    const size_t bytes = size_t(body.staged_count()) * sizeof(T);
    int limit = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, stream.device_index()));
    const auto kernel = grid_stride_kernel<Body, T>;
    if (bytes <= size_t(limit)) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<blocks, kThreads, bytes, stream.stream()>>>(n, body, body.staged(), body.staged_count());
    } else {  // too large to stage: every thread reads global memory (through L1/L2)
      kernel<<<blocks, kThreads, 0, stream.stream()>>>(n, body, static_cast<const T*>(nullptr), 0);
    }
  } else {
    grid_stride_kernel<Body, char><<<blocks, kThreads, 0, stream.stream()>>>(n, body, nullptr, 0);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The CUDA launch policy handed to device-generic host code; see CpuLauncher in parallel.h.
struct CudaLauncher {
  template <typename Body>
  void operator()(int64_t n, const Body& body, int64_t /*grain: CPU only*/ = 1) const { parallel_for_cuda(n, body); }
  void fresh_output(const at::Tensor&) const {}
  // Every index in parallel: outputs shared within a group are updated with shared_add (atomics).
  template <typename Body>
  void grouped(int64_t groups, int64_t size, const Body& body) const { parallel_for_cuda(groups * size, body); }
};

}  // namespace handgeom
