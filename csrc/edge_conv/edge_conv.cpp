// Input validation and dispatcher registration of the per-edge graph convolution.
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "edge_conv/edge_conv.h"

namespace handgeom::edge_conv {
namespace {

// Validates x [B, Mx, K, H, W], weight [M, E, kh, kw] (odd), edges [E, 2] in [0, K); builds CSR.
GraphTensors validate(const Checker& ck, const Tensor& x, const Tensor& weight, const Tensor& edges, bool mean) {
  ck.shape(x, "x", {-1, -1, -1, -1, -1});
  ck.floating(x, "x");
  ck.shape(weight, "weight", {-1, -1, -1, -1});
  ck.same_dtype(weight, "weight", x, "x");
  ck.same_device(weight, "weight", x, "x");
  ck.check(x.size(1) == 1 || x.size(1) == weight.size(0), "x must have 1 or ", weight.size(0),
           " heads (weight's), got ", x.size(1));
  ck.check(weight.size(2) % 2 == 1 && weight.size(3) % 2 == 1, "weight kernels must have odd sizes, got ",
           weight.size(2), "x", weight.size(3));
  ck.shape(edges, "edges", {weight.size(1), 2});
  ck.same_device(edges, "edges", x, "x");
  ck.indices(edges, "edges", x.size(2));
  const int64_t K = x.size(2);
  GraphTensors g;
  g.src = edges.select(1, 0).contiguous();
  g.tgt = edges.select(1, 1).contiguous();
  auto csr = [K](const Tensor& key, Tensor& ptr, Tensor& order) {
    order = std::get<1>(at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false)).contiguous();
    ptr = at::cat({at::zeros({1}, key.options()), at::bincount(key, {}, K).cumsum(0)}).contiguous();
  };
  csr(g.tgt, g.in_ptr, g.in_edge);
  csr(g.src, g.out_ptr, g.out_edge);
  g.mean = mean;
  return g;
}

template <DeviceOps (*ops)()>
Tensor forward_op(const Tensor& x, const Tensor& weight, const Tensor& edges, const std::optional<Tensor>& bias,
                  bool mean) {
  const Checker ck("edge_conv2d");
  const GraphTensors g = validate(ck, x, weight, edges, mean);
  Tensor b;
  if (bias.has_value()) {
    ck.shape(*bias, "bias", {weight.size(0), weight.size(1)});
    ck.same_dtype(*bias, "bias", x, "x");
    ck.same_device(*bias, "bias", x, "x");
    b = bias->contiguous();
  }
  const c10::DeviceGuard guard(x.device());
  return ops().forward(x.contiguous(), weight.contiguous(), b, g);
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor> backward_op(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                               const Tensor& edges, bool mean) {
  const Checker ck("edge_conv2d_backward");
  const GraphTensors g = validate(ck, x, weight, edges, mean);
  ck.shape(grad_out, "grad_out", {x.size(0), weight.size(0), x.size(2), x.size(3), x.size(4)});
  ck.same_dtype(grad_out, "grad_out", x, "x");
  ck.same_device(grad_out, "grad_out", x, "x");
  const c10::DeviceGuard guard(x.device());
  return ops().backward(grad_out.contiguous(), x.contiguous(), weight.contiguous(), g);
}

}  // namespace

TORCH_LIBRARY_IMPL(handgeom, CPU, m) {
  m.impl("edge_conv2d", &forward_op<cpu_ops>);
  m.impl("edge_conv2d_backward", &backward_op<cpu_ops>);
}

#ifdef HANDGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(handgeom, CUDA, m) {
  m.impl("edge_conv2d", &forward_op<cuda_ops>);
  m.impl("edge_conv2d_backward", &backward_op<cuda_ops>);
}
#endif

}  // namespace handgeom::edge_conv
