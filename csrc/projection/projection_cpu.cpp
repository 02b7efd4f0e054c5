// CPU launch of the projection kernels: one thread-pool task range per index range.
#include "common/parallel.h"
#include "projection/projection.h"

namespace handgeom::projection {

namespace {
struct CpuLaunch {
  template <typename Body>
  void operator()(int64_t n, const Body& body) const { parallel_for_cpu(n, 1, body); }
};
}  // namespace

at::Tensor forward_cpu(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                       const Options& o) {
  return forward(uv, feat, bones, o, CpuLaunch{});
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& uv,
                                                const at::Tensor& feat, const at::Tensor& bones,
                                                const Options& o) {
  // One task per bone plane over all channels: the pixel geometry is computed once per pixel.
  return backward(grad_out, uv, feat, bones, o, CpuLaunch{}, feat.size(2));
}

}  // namespace handgeom::projection
