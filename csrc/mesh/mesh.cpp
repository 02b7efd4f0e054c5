// Input validation and dispatcher registration of the mesh queries.
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "mesh/mesh.h"

namespace handgeom::mesh {
namespace {

void check_verts(const Checker& ck, const Tensor& verts) {
  ck.shape(verts, "verts", {-1, -1, 3});
  ck.floating(verts, "verts");
}

// faces [F, 3] (shared) or [B, F, 3], int32 or int64, entries in [0, V) -> int32 [1 or B, F, 3].
Tensor checked_faces(const Checker& ck, const Tensor& faces, const Tensor& verts) {
  ck.check(faces.dim() == 2 || faces.dim() == 3, "faces must have shape [F, 3] or [B, F, 3], got ", faces.sizes());
  if (faces.dim() == 3) ck.shape(faces, "faces", {verts.size(0), -1, 3});
  else ck.shape(faces, "faces", {-1, 3});
  ck.check(faces.scalar_type() == at::kLong || faces.scalar_type() == at::kInt,
           "faces must be int64 or int32, got ", faces.scalar_type());
  ck.same_device(faces, "faces", verts, "verts");
  ck.check(verts.size(1) < (int64_t(1) << 31), "meshes must have fewer than 2^31 vertices");
  const Tensor faces64 = faces.to(at::kLong);
  ck.indices(faces64, "faces", verts.size(1));
  return (faces.dim() == 2 ? faces.unsqueeze(0) : faces).to(at::kInt).contiguous();
}

// The BVH tensors of mesh_bvh, consistent with each other (traversal trusts their sizes).
void check_bvh(const Checker& ck, const Tensor& order, const Tensor& tris, const Tensor& boxes) {
  ck.shape(order, "order", {-1, -1});
  const int64_t B = order.size(0), F = order.size(1);
  ck.check(order.scalar_type() == at::kInt, "order must be int32 (from mesh_bvh), got ", order.scalar_type());
  ck.shape(tris, "tris", {B, F, 9});
  ck.floating(tris, "tris");
  ck.shape(boxes, "boxes", {B, 2 * leaves_for(F) - 1, 6});
  ck.same_dtype(boxes, "boxes", tris, "tris");
  ck.same_device(tris, "tris", order, "order");
  ck.same_device(boxes, "boxes", order, "order");
}

void check_points(const Checker& ck, const Tensor& points, const char* name, const Tensor& tris) {
  ck.shape(points, name, {tris.size(0), -1, 3});
  ck.same_dtype(points, name, tris, "tris");
  ck.same_device(points, name, tris, "tris");
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor> bvh_op(const Tensor& verts, const Tensor& faces, const std::optional<Tensor>& order) {
  const Checker ck("mesh_bvh");
  check_verts(ck, verts);
  const Tensor f = checked_faces(ck, faces, verts);
  std::optional<Tensor> given;
  if (order.has_value()) {
    ck.shape(*order, "order", {verts.size(0), f.size(1)});
    ck.same_device(*order, "order", verts, "verts");
    ck.indices(order->to(at::kLong), "order", f.size(1));
    given = order->to(at::kInt).contiguous();
  }
  const c10::DeviceGuard guard(verts.device());
  return ops().build(verts.contiguous(), f, given);
}

template <DeviceOps (*ops)()>
Tensor inside_op(const Tensor& points, const Tensor& order, const Tensor& tris, const Tensor& boxes, int64_t n_rays) {
  const Checker ck("points_inside_mesh");
  check_bvh(ck, order, tris, boxes);
  check_points(ck, points, "points", tris);
  ck.check(n_rays >= 1 && n_rays <= kMaxRays && n_rays % 2 == 1, "n_rays must be odd and lie in [1, ", kMaxRays,
           "] (a majority vote), got ", n_rays);
  const c10::DeviceGuard guard(points.device());
  return ops().inside(points.contiguous(), order.contiguous(), tris.contiguous(), boxes.contiguous(), n_rays);
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor> ray_op(const Tensor& origins, const Tensor& dirs, const Tensor& order,
                                          const Tensor& tris, const Tensor& boxes) {
  const Checker ck("ray_mesh_intersect");
  check_bvh(ck, order, tris, boxes);
  check_points(ck, origins, "origins", tris);
  ck.shape(dirs, "dirs", {origins.size(0), origins.size(1), 3});
  ck.same_dtype(dirs, "dirs", tris, "tris");
  ck.same_device(dirs, "dirs", tris, "tris");
  const c10::DeviceGuard guard(origins.device());
  return ops().ray_hit(origins.contiguous(), dirs.contiguous(), order.contiguous(), tris.contiguous(),
                       boxes.contiguous());
}

// The mesh a distance query measures against: checked for consistency with the BVH, and used by
// the backward pass.
void check_mesh_of_bvh(const Checker& ck, const Tensor& verts, const Tensor& faces, const Tensor& tris) {
  check_verts(ck, verts);
  ck.check(verts.size(0) == tris.size(0), "verts and the BVH must have the same batch size, got ",
           verts.size(0), " and ", tris.size(0));
  ck.same_dtype(verts, "verts", tris, "tris");
  ck.same_device(verts, "verts", tris, "tris");
  ck.check(faces.size(-2) == tris.size(1), "faces and the BVH must have the same number of faces, got ",
           faces.size(-2), " and ", tris.size(1));
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor> distance_op(const Tensor& points, const Tensor& verts, const Tensor& faces,
                                               const Tensor& order, const Tensor& tris, const Tensor& boxes) {
  const Checker ck("signed_distance");
  check_bvh(ck, order, tris, boxes);
  check_points(ck, points, "points", tris);
  check_mesh_of_bvh(ck, verts, faces, tris);
  const c10::DeviceGuard guard(points.device());
  return ops().signed_distance(points.contiguous(), order.contiguous(), tris.contiguous(), boxes.contiguous());
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor> penetration_op(const Tensor& points, const Tensor& verts, const Tensor& faces,
                                          const Tensor& order, const Tensor& tris, const Tensor& boxes, bool squared) {
  const Checker ck("penetration_loss");
  check_bvh(ck, order, tris, boxes);
  check_points(ck, points, "points", tris);
  check_mesh_of_bvh(ck, verts, faces, tris);
  const c10::DeviceGuard guard(points.device());
  return ops().penetration(points.contiguous(), order.contiguous(), tris.contiguous(), boxes.contiguous(), squared);
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor> distance_backward_op(const Tensor& coef, const Tensor& points, const Tensor& verts,
                                                const Tensor& faces, const Tensor& face) {
  const Checker ck("mesh_distance_backward");
  check_verts(ck, verts);
  const Tensor f = checked_faces(ck, faces, verts);
  ck.shape(points, "points", {verts.size(0), -1, 3});
  ck.same_dtype(points, "points", verts, "verts");
  ck.same_device(points, "points", verts, "verts");
  ck.shape(coef, "coef", {points.size(0), points.size(1)});
  ck.same_dtype(coef, "coef", verts, "verts");
  ck.same_device(coef, "coef", verts, "verts");
  ck.shape(face, "face", {points.size(0), points.size(1)});
  ck.same_device(face, "face", verts, "verts");
  ck.check(face.scalar_type() == at::kLong, "face must be int64, got ", face.scalar_type());
  if (face.numel() > 0) {  // -1: no closest face
    const auto [lo, hi] = at::aminmax(face);
    ck.check(lo.item<int64_t>() >= -1 && hi.item<int64_t>() < f.size(1), "face entries must lie in [-1, ",
             f.size(1), ")");
  }
  const c10::DeviceGuard guard(points.device());
  return ops().distance_backward(coef.contiguous(), points.contiguous(), verts.contiguous(), f, face.contiguous());
}

}  // namespace

TORCH_LIBRARY_IMPL(handgeom, CPU, m) {
  m.impl("mesh_bvh", &bvh_op<cpu_ops>);
  m.impl("mesh_inside", &inside_op<cpu_ops>);
  m.impl("mesh_ray_hit", &ray_op<cpu_ops>);
  m.impl("mesh_signed_distance", &distance_op<cpu_ops>);
  m.impl("mesh_penetration", &penetration_op<cpu_ops>);
  m.impl("mesh_distance_backward", &distance_backward_op<cpu_ops>);
}

#ifdef HANDGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(handgeom, CUDA, m) {
  m.impl("mesh_bvh", &bvh_op<cuda_ops>);
  m.impl("mesh_inside", &inside_op<cuda_ops>);
  m.impl("mesh_ray_hit", &ray_op<cuda_ops>);
  m.impl("mesh_signed_distance", &distance_op<cuda_ops>);
  m.impl("mesh_penetration", &penetration_op<cuda_ops>);
  m.impl("mesh_distance_backward", &distance_backward_op<cuda_ops>);
}
#endif

}  // namespace handgeom::mesh
