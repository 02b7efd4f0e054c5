// CPU launch of the projection kernels.
#include "common/parallel.h"
#include "projection/projection.h"

namespace handgeom::projection {

at::Tensor forward_cpu(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                       const Options& o) {
  return forward<32>(uv, feat, bones, o, CpuLauncher{});
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& uv,
                                                const at::Tensor& feat, const at::Tensor& bones,
                                                const Options& o) {
  // One task per bone plane and 64 channels: the pixel geometry is computed once per 64 channels.
  return backward(grad_out, uv, feat, bones, o, CpuLauncher{}, 64);
}

}  // namespace handgeom::projection
