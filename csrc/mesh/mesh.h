// Host side of the mesh queries: argument bundles and launch sequences, written once and
// instantiated by mesh_cpu.cpp and mesh_cuda.cu with their launcher.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "mesh/mesh_kernels.h"

namespace handgeom::mesh {

using at::Tensor;

// verts [B, V, 3]; faces int32 [Bf, F, 3], Bf = 1 or B (validated, contiguous: mesh.cpp).
template <typename T>
Meshes<T> make_meshes(const Tensor& verts, const Tensor& faces) {
  return {verts.data_ptr<T>(), faces.data_ptr<int32_t>(), verts.size(1), faces.size(1),
          faces.size(0) == 1 ? 0 : faces.size(1) * 3};
}

template <typename T>
Bvh<T> make_bvh(const Tensor& order, const Tensor& tris, const Tensor& boxes) {
  return {tris.data_ptr<T>(), boxes.data_ptr<T>(), order.data_ptr<int32_t>(), order.size(1),
          (boxes.size(1) + 1) / 2};
}

inline int64_t leaves_for(int64_t faces) {
  int64_t leaves = 1;
  while (leaves * kLeafSize < faces) leaves *= 2;
  return leaves;
}

// Faces (or nodes) of build work per CPU task range: a hand's BVH (656 faces) builds on one
// thread in ~0.1 ms, where a parallel region per tree level would cost more than the work.
constexpr int64_t kBuildGrain = 4096;

// (order [B, F] int32, tris [B, F, 9], boxes [B, 2L-1, 6]); with `order` given, a refit.
template <typename Launch>
std::tuple<Tensor, Tensor, Tensor> build(const Tensor& verts, const Tensor& faces,
                                         const std::optional<Tensor>& order_in, const Launch& launch) {
  const int64_t B = verts.size(0), F = faces.size(1), leaves = leaves_for(F);
  Tensor order = order_in.has_value() ? *order_in : Tensor();
  Tensor tris = at::empty({B, F, 9}, verts.options());
  Tensor boxes = at::empty({B, 2 * leaves - 1, 6}, verts.options());
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "mesh_bvh", [&] {
    const Meshes<scalar_t> m = make_meshes<scalar_t>(verts, faces);
    if (!order.defined()) {  // top-down median splits, one launch per tree level
      order = at::arange(F, verts.options().dtype(at::kInt)).repeat({B, 1});
      Tensor centroids = at::empty({B, F, 3}, verts.options());
      launch(B * F, Centroids<scalar_t>{m, centroids.data_ptr<scalar_t>()}, kBuildGrain);
      for (int depth = 0; (int64_t(1) << depth) < leaves; ++depth) {  // a node splits F >> depth faces
        launch(B << depth, SplitNodes<scalar_t>{centroids.data_ptr<scalar_t>(), order.data_ptr<int32_t>(), F, depth},
               std::max<int64_t>(1, kBuildGrain / std::max<int64_t>(1, F >> depth)));
      }
    }
    launch(B * F, GatherTriangles<scalar_t>{m, order.data_ptr<int32_t>(), tris.data_ptr<scalar_t>()}, kBuildGrain);
    const Bvh<scalar_t> bvh = make_bvh<scalar_t>(order, tris, boxes);
    launch(B * bvh.nodes(), NodeBoxes<scalar_t>{bvh, boxes.data_ptr<scalar_t>()}, kBuildGrain);
  });
  return {order, tris, boxes};
}

// The order of the point queries of each mesh, perm [B, N] (CoherentOrder).
template <typename T, typename Launch>
Tensor coherent_order(const Tensor& points, const Launch& launch) {
  Tensor perm = at::empty({points.size(0), points.size(1)}, points.options().dtype(at::kLong));
  launch(points.size(0), CoherentOrder<T>{points.data_ptr<T>(), points.size(1), perm.data_ptr<int64_t>()});
  return perm;
}

template <typename Launch>
Tensor inside(const Tensor& points, const Tensor& order, const Tensor& tris, const Tensor& boxes,
              int64_t n_rays, const Launch& launch) {
  Tensor out = at::empty({points.size(0), points.size(1)}, points.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "points_inside_mesh", [&] {
    launch(out.numel(), InsideQuery<scalar_t>{make_bvh<scalar_t>(order, tris, boxes), points.data_ptr<scalar_t>(),
                                              points.size(1), int(n_rays), out.data_ptr<bool>()});
  });
  return out;
}

template <typename Launch>
std::tuple<Tensor, Tensor, Tensor> ray_hit(const Tensor& origins, const Tensor& dirs, const Tensor& order,
                                           const Tensor& tris, const Tensor& boxes, const Launch& launch) {
  const int64_t B = origins.size(0), R = origins.size(1);
  Tensor t = at::empty({B, R}, origins.options());
  Tensor face = at::empty({B, R}, origins.options().dtype(at::kLong));
  Tensor bary = at::empty({B, R, 3}, origins.options());
  AT_DISPATCH_FLOATING_TYPES(origins.scalar_type(), "ray_mesh_intersect", [&] {
    launch(B * R, RayQuery<scalar_t>{make_bvh<scalar_t>(order, tris, boxes), origins.data_ptr<scalar_t>(),
                                     dirs.data_ptr<scalar_t>(), R, t.data_ptr<scalar_t>(), face.data_ptr<int64_t>(),
                                     bary.data_ptr<scalar_t>()});
  });
  return {t, face, bary};
}

template <typename Launch>
std::tuple<Tensor, Tensor, Tensor> signed_distance(const Tensor& points, const Tensor& order, const Tensor& tris,
                                                   const Tensor& boxes, const Launch& launch) {
  const int64_t B = points.size(0), N = points.size(1);
  Tensor sdf = at::empty({B, N}, points.options());
  Tensor face = at::empty({B, N}, points.options().dtype(at::kLong));
  Tensor closest = at::empty({B, N, 3}, points.options());
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "signed_distance", [&] {
    const Bvh<scalar_t> bvh = make_bvh<scalar_t>(order, tris, boxes);
    const Tensor perm = coherent_order<scalar_t>(points, launch);
    launch(B * N, DistanceQuery<scalar_t>{bvh, points.data_ptr<scalar_t>(), N, perm.data_ptr<int64_t>(),
                                          sdf.data_ptr<scalar_t>(), face.data_ptr<int64_t>(),
                                          closest.data_ptr<scalar_t>()});
  });
  return {sdf, face, closest};
}

template <typename Launch>
std::tuple<Tensor, Tensor> penetration(const Tensor& points, const Tensor& order, const Tensor& tris,
                                       const Tensor& boxes, bool squared, const Launch& launch) {
  const int64_t B = points.size(0), N = points.size(1);
  Tensor loss = at::empty({B, N}, points.options());
  Tensor face = at::empty({B, N}, points.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "penetration_loss", [&] {
    const Bvh<scalar_t> bvh = make_bvh<scalar_t>(order, tris, boxes);
    const Tensor perm = coherent_order<scalar_t>(points, launch);
    launch(B * N, PenetrationQuery<scalar_t>{bvh, points.data_ptr<scalar_t>(), N, perm.data_ptr<int64_t>(),
                                             squared, loss.data_ptr<scalar_t>(), face.data_ptr<int64_t>()});
  });
  return {loss, face};
}

// Gradients of sum_i coef_i d_i, d_i the distance of point i to its face face[i].
template <typename Launch>
std::tuple<Tensor, Tensor> distance_backward(const Tensor& coef, const Tensor& points, const Tensor& verts,
                                             const Tensor& faces, const Tensor& face, const Launch& launch) {
  const int64_t B = points.size(0), N = points.size(1);
  Tensor grad_points = at::empty_like(points);
  Tensor grad_verts = at::zeros_like(verts);
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "mesh_distance_backward", [&] {
    launch.grouped(B, N, DistanceBackward<scalar_t>{make_meshes<scalar_t>(verts, faces), points.data_ptr<scalar_t>(),
                                                    face.data_ptr<int64_t>(), coef.data_ptr<scalar_t>(), N,
                                                    grad_points.data_ptr<scalar_t>(),
                                                    grad_verts.data_ptr<scalar_t>()});
  });
  return {grad_points, grad_verts};
}

// The entry points of one device, as plain function pointers: mesh_cpu.cpp and mesh_cuda.cu each
// instantiate the launch sequences above with their launcher; mesh.cpp validates and dispatches.
struct DeviceOps {
  std::tuple<Tensor, Tensor, Tensor> (*build)(const Tensor&, const Tensor&, const std::optional<Tensor>&);
  Tensor (*inside)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t);
  std::tuple<Tensor, Tensor, Tensor> (*ray_hit)(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                const Tensor&);
  std::tuple<Tensor, Tensor, Tensor> (*signed_distance)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);
  std::tuple<Tensor, Tensor> (*penetration)(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool);
  std::tuple<Tensor, Tensor> (*distance_backward)(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                  const Tensor&);
};

template <typename Launch>
DeviceOps make_device_ops() {
  return {
      [](const Tensor& v, const Tensor& f, const std::optional<Tensor>& o) { return build(v, f, o, Launch{}); },
      [](const Tensor& p, const Tensor& o, const Tensor& t, const Tensor& b, int64_t n) {
        return inside(p, o, t, b, n, Launch{});
      },
      [](const Tensor& org, const Tensor& dir, const Tensor& o, const Tensor& t, const Tensor& b) {
        return ray_hit(org, dir, o, t, b, Launch{});
      },
      [](const Tensor& p, const Tensor& o, const Tensor& t, const Tensor& b) {
        return signed_distance(p, o, t, b, Launch{});
      },
      [](const Tensor& p, const Tensor& o, const Tensor& t, const Tensor& b, bool sq) {
        return penetration(p, o, t, b, sq, Launch{});
      },
      [](const Tensor& c, const Tensor& p, const Tensor& v, const Tensor& f, const Tensor& face) {
        return distance_backward(c, p, v, f, face, Launch{});
      },
  };
}

DeviceOps cpu_ops();
DeviceOps cuda_ops();

}  // namespace handgeom::mesh
