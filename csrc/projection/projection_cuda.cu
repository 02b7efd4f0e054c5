// CUDA launch of the projection kernels (launch code only; the bodies are projection_kernels.h).
#include <c10/cuda/CUDAGuard.h>

#include "common/cuda_launch.cuh"
#include "projection/projection.h"

namespace handgeom::projection {

namespace {
// Channels per backward thread: B*P*C/8 threads, each reusing its pixel geometry 8 times.
constexpr int64_t kBackwardChunk = 8;
}  // namespace

at::Tensor forward_cuda(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                        const Options& o) {
  const c10::cuda::CUDAGuard guard(uv.device());
  return forward<1>(uv, feat, bones, o, CudaLauncher{});
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& uv,
                                                 const at::Tensor& feat, const at::Tensor& bones,
                                                 const Options& o) {
  const c10::cuda::CUDAGuard guard(uv.device());
  return backward(grad_out, uv, feat, bones, o, CudaLauncher{}, kBackwardChunk);
}

}  // namespace handgeom::projection
