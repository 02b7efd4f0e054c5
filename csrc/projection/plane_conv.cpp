// Input validation and dispatcher registration of bone_plane_conv (the projection's checks, then
// the weight's and the bias's).
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <string>

#include "common/checks.h"
#include "projection/plane_conv.h"

namespace handgeom::projection {
namespace {

// weight [O, P*C, k, k] with k odd, same dtype and device as joint_uv; made contiguous.
at::Tensor validate_weight(const Checker& ck, const at::Tensor& weight, const Inputs& in) {
  const int64_t planes = in.bones.size(0) * in.feat.size(2);
  ck.shape(weight, "weight", {-1, planes, -1, -1});
  ck.check(weight.size(2) == weight.size(3) && weight.size(2) % 2 == 1,
           "weight must have a square kernel of odd size k ([O, P*C, k, k], k odd), got ", weight.sizes());
  ck.same_dtype(weight, "weight", in.uv, "joint_uv");
  ck.same_device(weight, "weight", in.uv, "joint_uv");
  return weight.contiguous();
}

template <ConvDeviceOps (*ops)()>
at::Tensor conv_op(const at::Tensor& joint_uv, const at::Tensor& joint_feat, const at::Tensor& bones,
                   const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t height, int64_t width,
                   double radius, const std::string& profile, double sigma) {
  const Checker ck("bone_plane_conv");
  const Inputs in = validate(ck, joint_uv, joint_feat, bones, height, width, radius, profile, sigma);
  const at::Tensor w = validate_weight(ck, weight, in);
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    ck.shape(*bias, "bias", {weight.size(0)});
    ck.same_dtype(*bias, "bias", joint_uv, "joint_uv");
    ck.same_device(*bias, "bias", joint_uv, "joint_uv");
    b = bias->contiguous();
  }
  const c10::DeviceGuard guard(joint_uv.device());
  return ops().forward(in.uv, in.feat, in.bones, w, b, in.options);
}

template <ConvDeviceOps (*ops)()>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward_op(
    const at::Tensor& grad_out, const at::Tensor& joint_uv, const at::Tensor& joint_feat, const at::Tensor& bones,
    const at::Tensor& weight, int64_t height, int64_t width, double radius, const std::string& profile, double sigma) {
  const Checker ck("bone_plane_conv_backward");
  const Inputs in = validate(ck, joint_uv, joint_feat, bones, height, width, radius, profile, sigma);
  const at::Tensor w = validate_weight(ck, weight, in);
  ck.shape(grad_out, "grad_out", {joint_uv.size(0), weight.size(0), height, width});
  ck.same_dtype(grad_out, "grad_out", joint_uv, "joint_uv");
  ck.same_device(grad_out, "grad_out", joint_uv, "joint_uv");
  const c10::DeviceGuard guard(joint_uv.device());
  return ops().backward(grad_out, in.uv, in.feat, in.bones, w, in.options);
}

}  // namespace

TORCH_LIBRARY_IMPL(handgeom, CPU, m) {
  m.impl("bone_plane_conv", &conv_op<conv_cpu_ops>);
  m.impl("bone_plane_conv_backward", &conv_backward_op<conv_cpu_ops>);
}

#ifdef HANDGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(handgeom, CUDA, m) {
  m.impl("bone_plane_conv", &conv_op<conv_cuda_ops>);
  m.impl("bone_plane_conv_backward", &conv_backward_op<conv_cuda_ops>);
}
#endif

}  // namespace handgeom::projection
