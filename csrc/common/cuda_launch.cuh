// CUDA launcher: runs body(i) for i in [0, n) with a grid-stride loop on the current stream.
// Included only by .cu files; the kernel template is instantiated and launched in the same
// translation unit, which nvcc 13's hidden-visibility default for __global__ requires.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace handgeom {

template <typename Body>
__global__ void grid_stride_kernel(int64_t n, Body body) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) body(i);
}

template <typename Body>
void parallel_for_cuda(int64_t n, const Body& body) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, stream.device_index()));
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(sms) * 32);
  grid_stride_kernel<<<blocks, kThreads, 0, stream.stream()>>>(n, body);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The CUDA launch policy handed to device-generic host code; see CpuLauncher in parallel.h.
struct CudaLauncher {
  template <typename Body>
  void operator()(int64_t n, const Body& body) const { parallel_for_cuda(n, body); }
  void fresh_output(const at::Tensor&) const {}
  // Every index in parallel: outputs shared within a group are updated with shared_add (atomics).
  template <typename Body>
  void grouped(int64_t groups, int64_t size, const Body& body) const { parallel_for_cuda(groups * size, body); }
};

}  // namespace handgeom
