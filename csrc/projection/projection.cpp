// Input validation and dispatcher registration of the projection op family.
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <string>

#include "common/checks.h"
#include "projection/projection.h"

namespace handgeom::projection {
namespace {

constexpr int64_t kMaxSize = int64_t(1) << 20;
// Joints at most 2^20 half-images from the centre: pixel coordinates stay below 2^40, so the
// squares and dot products of the pixel geometry cannot overflow float32.
constexpr int64_t kMaxUV = int64_t(1) << 20;

}  // namespace

// Validates what every projection op receives and makes it contiguous.
Inputs validate(const Checker& ck, const at::Tensor& joint_uv, const at::Tensor& joint_feat,
                const at::Tensor& bones, int64_t height, int64_t width, double radius,
                const std::string& profile, double sigma) {
  ck.shape(joint_uv, "joint_uv", {-1, -1, 2});
  const int64_t B = joint_uv.size(0), J = joint_uv.size(1);
  ck.shape(joint_feat, "joint_feat", {B, J, -1});
  ck.shape(bones, "bones", {-1, 2});
  ck.floating(joint_uv, "joint_uv");
  ck.same_dtype(joint_feat, "joint_feat", joint_uv, "joint_uv");
  ck.same_device(joint_feat, "joint_feat", joint_uv, "joint_uv");
  ck.same_device(bones, "bones", joint_uv, "joint_uv");
  ck.indices(bones, "bones", J);
  ck.within(joint_uv, "joint_uv", kMaxUV);
  // Pixel centres must stay exact in float32.
  ck.check(height > 0 && height <= kMaxSize && width > 0 && width <= kMaxSize, "size must lie in [1, ",
           kMaxSize, "], got (", height, ", ", width, ")");
  ck.positive(radius, "radius");
  int64_t prof = kHard;
  if (profile == "gaussian") {
    prof = kGaussian;
    ck.positive(sigma, "sigma");
  } else {
    ck.check(profile == "hard", "profile must be 'hard' or 'gaussian', got '", profile, "'");
  }
  return {joint_uv.contiguous(), joint_feat.contiguous(), bones.contiguous(),
          {height, width, prof, radius, sigma}};
}

namespace {

template <DeviceOps (*ops)()>
at::Tensor projection_op(const at::Tensor& joint_uv, const at::Tensor& joint_feat,
                         const at::Tensor& bones, int64_t height, int64_t width, double radius,
                         const std::string& profile, double sigma) {
  const Checker ck("bone_plane_projection");
  const Inputs in = validate(ck, joint_uv, joint_feat, bones, height, width, radius, profile, sigma);
  const c10::DeviceGuard guard(joint_uv.device());
  return ops().forward(in.uv, in.feat, in.bones, in.options);
}

template <DeviceOps (*ops)()>
std::tuple<at::Tensor, at::Tensor> projection_backward_op(
    const at::Tensor& grad_out, const at::Tensor& joint_uv, const at::Tensor& joint_feat,
    const at::Tensor& bones, int64_t height, int64_t width, double radius,
    const std::string& profile, double sigma) {
  const Checker ck("bone_plane_projection_backward");
  const Inputs in = validate(ck, joint_uv, joint_feat, bones, height, width, radius, profile, sigma);
  ck.shape(grad_out, "grad_out",
           {joint_uv.size(0), bones.size(0) * joint_feat.size(2), height, width});
  ck.same_dtype(grad_out, "grad_out", joint_uv, "joint_uv");
  ck.same_device(grad_out, "grad_out", joint_uv, "joint_uv");
  const c10::DeviceGuard guard(joint_uv.device());
  // read through its strides: the gradient of out.sum() is an expanded scalar, never materialized
  return ops().backward(grad_out, in.uv, in.feat, in.bones, in.options);
}

}  // namespace

TORCH_LIBRARY_IMPL(handgeom, CPU, m) {
  m.impl("bone_plane_projection", &projection_op<cpu_ops>);
  m.impl("bone_plane_projection_backward", &projection_backward_op<cpu_ops>);
}

#ifdef HANDGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(handgeom, CUDA, m) {
  m.impl("bone_plane_projection", &projection_op<cuda_ops>);
  m.impl("bone_plane_projection_backward", &projection_backward_op<cuda_ops>);
}
#endif

}  // namespace handgeom::projection
