// Host side of bone_plane_conv: the launch sequence, written once and instantiated by
// plane_conv_cpu.cpp and plane_conv_cuda.cu with their launcher and chunk sizes. The layout
// changes and the batched matrix products (the per-bone tap products and their gradients) are
// ATen calls, device-generic.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <tuple>

#include "projection/plane_conv_kernels.h"
#include "projection/projection.h"

namespace handgeom::projection {

// Chunk sizes of one device. kVec: output channels per vector chunk (O is padded to a multiple
// of it); kX: output columns per forward task; kTile: the side of a weight-transpose task.
template <int64_t kVec, int64_t kX, int64_t kTile>
struct ConvTiles {
  static constexpr int64_t vec = kVec, x = kX, tile = kTile;
};

// A large scratch or output tensor, advised for huge pages before its first touch (memory.h):
// the weight-sized buffers here (24 MB at DIR's sizes) otherwise page-fault in on every call.
template <typename Launch>
at::Tensor fresh(const Launch& launch, at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  launch.fresh_output(t);
  return t;
}

// What forward and backward both need: the masks and boxes, the weight as [P, C, k*k, Op]
// (output channel last, zero-padded), the endpoint features as [P, 2B, C] (row (b, s) of bone p
// is f[b, bones[p, s]]) and the tap products [P, B, 2, k*k, Op].
struct ConvState {
  at::Tensor masks, boxes, wt, ends, taps;
  int64_t O, Op, k;
};

template <typename T>
ConvProblem<T> make_conv_problem(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                                 const Options& o, const ConvState& st) {
  return {make_problem<T>(uv, feat, bones, o), st.O, st.Op, st.k};
}

// weight [O, P*C, k, k] (validated) -> state with masks and taps computed. The tap products are
// one batched matrix product over the bones, [P, 2B, C] x [P, C, k*k*Op], left to the BLAS
// (cuBLAS on CUDA).
template <typename Tiles, typename Launch>
ConvState conv_prepare(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                       const at::Tensor& weight, const Options& o, const Launch& launch) {
  const int64_t B = uv.size(0), C = feat.size(2), P = bones.size(0);
  ConvState st;
  st.O = weight.size(0);
  st.k = weight.size(2);
  st.Op = (st.O + Tiles::vec - 1) / Tiles::vec * Tiles::vec;
  const int64_t kk = st.k * st.k, rows = P * C * kk;
  st.wt = fresh(launch, {P, C, kk, st.Op}, weight.options());
  st.ends = feat.index_select(1, bones.reshape(-1)).view({B, P, 2, C}).permute({1, 0, 2, 3}).reshape({P, 2 * B, C});
  st.masks = at::empty({B, P, o.height, o.width, 2}, uv.options());
  st.boxes = at::empty({B, P, 4}, uv.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_prepare", [&] {
    const Transpose<scalar_t, Tiles::tile> wt{weight.const_data_ptr<scalar_t>(), st.O, rows,
                                              st.wt.data_ptr<scalar_t>(), rows, st.Op, st.Op};
    launch(wt.tasks(), wt);
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    launch(B * P * o.height, BoneMasks<scalar_t>{cp.pr, st.masks.data_ptr<scalar_t>(), st.boxes.data_ptr<int64_t>()}, 8);
  });
  st.taps = fresh(launch, {P, 2 * B, kk * st.Op}, uv.options());
  at::bmm_out(st.taps, st.ends, st.wt.view({P, C, kk * st.Op}));
  return st;
}

template <typename Tiles, typename Launch>
at::Tensor conv_forward(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                        const at::Tensor& weight, const at::Tensor& bias, const Options& o,
                        const Launch& launch) {
  const int64_t B = uv.size(0), O = weight.size(0);
  at::Tensor out = at::empty({B, O, o.height, o.width}, uv.options());
  if (out.numel() == 0) return out;
  if (bones.size(0) * feat.size(2) == 0) {  // a convolution over no input channels: the bias
    if (bias.defined()) return out.copy_(bias.view({1, O, 1, 1}).expand_as(out));
    return out.zero_();
  }
  const ConvState st = conv_prepare<Tiles>(uv, feat, bones, weight, o, launch);
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv", [&] {
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    const ConvForward<scalar_t, Tiles::x, Tiles::vec> body{
        cp, st.masks.const_data_ptr<scalar_t>(), st.boxes.const_data_ptr<int64_t>(), st.taps.const_data_ptr<scalar_t>(),
        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>()};
    launch(body.tasks(), body);
  });
  return out;
}

// grad_out may have any strides; it is copied only when its channels are not the innermost
// dimension (a channels-last gradient is read in place). The pixels give the taps' gradients
// gtaps (and the joint positions' share); the weight's and the endpoint features' gradients are
// then batched matrix products with them, as the taps are in the forward.
template <typename Tiles, typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_out, const at::Tensor& uv,
                                                             const at::Tensor& feat, const at::Tensor& bones,
                                                             const at::Tensor& weight, const Options& o,
                                                             const Launch& launch) {
  const int64_t B = uv.size(0), J = uv.size(1), C = feat.size(2), P = bones.size(0);
  at::Tensor grad_uv = at::zeros_like(uv), grad_feat = at::zeros_like(feat);
  if (grad_out.numel() == 0 || B * P * C == 0)
    return {grad_uv, grad_feat, at::zeros_like(weight, at::MemoryFormat::Contiguous)};
  const ConvState st = conv_prepare<Tiles>(uv, feat, bones, weight, o, launch);
  const int64_t kk = st.k * st.k, rows = P * C * kk, n_oc = st.Op / Tiles::vec;
  const at::Tensor g = grad_out.stride(1) == 1 ? grad_out : grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor gtaps = fresh(launch, {P, 2 * B, kk * st.Op}, uv.options());
  at::Tensor geom_partial = at::empty({B, P, n_oc, 4}, uv.options());
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_backward", [&] {
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    const ConvBackwardBone<scalar_t, Tiles::vec> bone{
        cp, st.masks.const_data_ptr<scalar_t>(), st.boxes.const_data_ptr<int64_t>(), st.taps.const_data_ptr<scalar_t>(),
        g.const_data_ptr<scalar_t>(), g.stride(0), g.stride(1), g.stride(2), g.stride(3),
        gtaps.data_ptr<scalar_t>(), geom_partial.data_ptr<scalar_t>()};
    launch(B * P * n_oc, bone);
  });
  // [P, C, 2B] x [P, 2B, k*k*Op] -> [P*C*k*k, Op], transposed below into the weight's layout
  at::Tensor gw_rows = fresh(launch, {P, C, kk * st.Op}, uv.options());
  at::bmm_out(gw_rows, st.ends.transpose(1, 2), gtaps);
  at::Tensor grad_weight = fresh(launch, weight.sizes(), weight.options());
  // [P, 2B, k*k*Op] x [P, k*k*Op, C] -> the endpoints' share [B, P, 2, C], gathered per joint
  const at::Tensor feat_partial = at::bmm(gtaps, st.wt.view({P, C, kk * st.Op}).transpose(1, 2))
                                      .view({P, B, 2, C})
                                      .permute({1, 0, 2, 3})
                                      .contiguous();
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_gather", [&] {
    const Transpose<scalar_t, Tiles::tile> gw{gw_rows.const_data_ptr<scalar_t>(), rows, st.Op,
                                              grad_weight.data_ptr<scalar_t>(), st.O, rows, rows};
    launch(gw.tasks(), gw);
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    launch(B * J * (C + 2),
           GatherJoints<scalar_t>{cp.pr, feat_partial.const_data_ptr<scalar_t>(), geom_partial.const_data_ptr<scalar_t>(),
                                  n_oc, grad_uv.data_ptr<scalar_t>(), grad_feat.data_ptr<scalar_t>()});
  });
  return {grad_uv, grad_feat, grad_weight};
}

struct ConvDeviceOps {
  at::Tensor (*forward)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const Options&);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*backward)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, const Options&);
};

template <typename Tiles, typename Launch>
ConvDeviceOps make_conv_device_ops() {
  return {
      [](const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones, const at::Tensor& weight,
         const at::Tensor& bias, const Options& o) { return conv_forward<Tiles>(uv, feat, bones, weight, bias, o, Launch{}); },
      [](const at::Tensor& g, const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
         const at::Tensor& weight, const Options& o) { return conv_backward<Tiles>(g, uv, feat, bones, weight, o, Launch{}); },
  };
}

ConvDeviceOps conv_cpu_ops();
ConvDeviceOps conv_cuda_ops();

}  // namespace handgeom::projection
