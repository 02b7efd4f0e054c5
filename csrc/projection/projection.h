// Host side of the projection op family: argument bundle and the launch sequence, written once
// and instantiated by projection_cpu.cpp and projection_cuda.cu with their launcher.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <string>
#include <tuple>

#include "common/checks.h"
#include "projection/projection_kernels.h"

namespace handgeom::projection {

struct Options {
  int64_t height, width, profile;
  double radius, sigma;
};

// Inputs are validated and contiguous (projection.cpp).
template <typename T>
Problem<T> make_problem(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                        const Options& o) {
  return {uv.data_ptr<T>(), feat.data_ptr<T>(), bones.data_ptr<int64_t>(),
          uv.size(0),       uv.size(1),         feat.size(2),
          bones.size(0),    o.height,           o.width,
          o.profile,        T(o.radius),        T(o.sigma)};
}

template <int64_t kTile, typename Launch>
at::Tensor forward(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                   const Options& o, const Launch& launch) {
  const int64_t B = uv.size(0), C = feat.size(2), P = bones.size(0);
  at::Tensor out = at::empty({B, P * C, o.height, o.width}, uv.options());
  if (out.numel() == 0) return out;
  launch.fresh_output(out);
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_projection", [&] {
    const auto pr = make_problem<scalar_t>(uv, feat, bones, o);
    using Body = ForwardTile<scalar_t, kTile>;
    launch(B * P * o.height * Body::tiles(o.width), Body{pr, out.data_ptr<scalar_t>()});
  });
  return out;
}

// grad_out may have any strides (expanded, sliced, transposed): it is read in place.
template <int64_t kTile, typename Launch>
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& uv,
                                            const at::Tensor& feat, const at::Tensor& bones,
                                            const Options& o, const Launch& launch, int64_t chunk) {
  const int64_t B = uv.size(0), J = uv.size(1), C = feat.size(2), P = bones.size(0);
  at::Tensor grad_uv = at::zeros_like(uv), grad_feat = at::zeros_like(feat);
  if (grad_out.numel() == 0) return {grad_uv, grad_feat};
  chunk = std::max<int64_t>(1, std::min(chunk, C));
  const int64_t n_chunks = (C + chunk - 1) / chunk;
  // O(B P C) scratch: per-bone sums, gathered per joint below.
  at::Tensor feat_partial = at::zeros({B, P, 2, C}, uv.options());
  at::Tensor geom_partial = at::empty({B, P, n_chunks, 4}, uv.options());
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_projection_backward", [&] {
    const auto pr = make_problem<scalar_t>(uv, feat, bones, o);
    launch(B * P * n_chunks,
           BackwardBone<scalar_t, kTile>{pr, grad_out.const_data_ptr<scalar_t>(), grad_out.stride(0),
                                         grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
                                         feat_partial.data_ptr<scalar_t>(),
                                         geom_partial.data_ptr<scalar_t>(), chunk, n_chunks});
    launch(B * J * (C + 2),
           GatherJoints<scalar_t>{pr, feat_partial.data_ptr<scalar_t>(),
                                  geom_partial.data_ptr<scalar_t>(), n_chunks,
                                  grad_uv.data_ptr<scalar_t>(), grad_feat.data_ptr<scalar_t>()});
  });
  return {grad_uv, grad_feat};
}

// The entry points of one device (projection_cpu.cpp, projection_cuda.cu); projection.cpp
// validates and dispatches. kTile: output columns per forward task and box columns per backward
// tile; kChunk: channels per backward task.
struct DeviceOps {
  at::Tensor (*forward)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const Options&);
  std::tuple<at::Tensor, at::Tensor> (*backward)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const Options&);
};

template <int64_t kTile, int64_t kChunk, typename Launch>
DeviceOps make_device_ops() {
  return {
      [](const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones, const Options& o) {
        return forward<kTile>(uv, feat, bones, o, Launch{});
      },
      [](const at::Tensor& g, const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
         const Options& o) { return backward<kTile>(g, uv, feat, bones, o, Launch{}, kChunk); },
  };
}

DeviceOps cpu_ops();
DeviceOps cuda_ops();

// What every op of the family receives, validated (projection.cpp) and made contiguous.
struct Inputs {
  at::Tensor uv, feat, bones;
  Options options;
};

Inputs validate(const Checker& ck, const at::Tensor& joint_uv, const at::Tensor& joint_feat,
                const at::Tensor& bones, int64_t height, int64_t width, double radius,
                const std::string& profile, double sigma);

}  // namespace handgeom::projection
