// Host side of bone_plane_conv: the launch sequence, written once and instantiated by
// plane_conv_cpu.cpp and plane_conv_cuda.cu with their launcher and chunk sizes. The batched
// matrix products (the per-bone tap products and their gradients) are ATen calls,
// device-generic; the weight's relayouts are the Transpose body.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <tuple>

#include "projection/plane_conv_kernels.h"
#include "projection/projection.h"

namespace handgeom::projection {

// Output channels are padded with zeros to a multiple of kChannelPad on every device, so the
// layouts the forward returns for its backward (weight_t, taps) have device-independent shapes
// (handgeom/ops/projection.py's fake kernel builds them too).
constexpr int64_t kChannelPad = 32;
inline int64_t padded_channels(int64_t O) { return (O + kChannelPad - 1) / kChannelPad * kChannelPad; }

// Chunk sizes of one device. kVec: output channels per vector chunk (divides kChannelPad); kX:
// output columns per forward task; kTile: the side of a weight-transpose task; kGradBytes: the
// weight's gradient is formed this many bytes of bones at a time (0: all at once).
template <int64_t kVec, int64_t kX, int64_t kTile, int64_t kGradBytes>
struct ConvTiles {
  static_assert(kChannelPad % kVec == 0);
  static constexpr int64_t vec = kVec, x = kX, tile = kTile, grad_bytes = kGradBytes;
};

// A large scratch or output tensor, advised for huge pages before its first touch (memory.h):
// the weight-sized buffers here (24 MB at DIR's sizes) otherwise page-fault in on every call.
template <typename Launch>
at::Tensor fresh(const Launch& launch, at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  launch.fresh_output(t);
  return t;
}

// What forward and backward both need: the masks and boxes, the endpoint features as [P, 2B, C]
// (row (b, s) of bone p is f[b, bones[p, s]]), the weight as wt [P, C, k*k, Op] (output channel
// last, zero-padded) and the tap products [P, B, 2, k*k, Op]. The forward computes wt and taps;
// the backward gets them back from it.
struct ConvState {
  at::Tensor masks, boxes, ends, wt, taps;
  int64_t O, Op, k;
};

template <typename T>
ConvProblem<T> make_conv_problem(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                                 const Options& o, const ConvState& st) {
  return {make_problem<T>(uv, feat, bones, o), st.O, st.Op, st.k};
}

// The state without wt and taps: masks, boxes and endpoint features, for O outputs and a k x k kernel.
template <typename Launch>
ConvState conv_state(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones, int64_t O, int64_t k,
                     const Options& o, const Launch& launch) {
  const int64_t B = uv.size(0), C = feat.size(2), P = bones.size(0);
  ConvState st;
  st.O = O;
  st.Op = padded_channels(O);
  st.k = k;
  st.ends = feat.index_select(1, bones.reshape(-1)).view({B, P, 2, C}).permute({1, 0, 2, 3}).reshape({P, 2 * B, C});
  st.masks = at::empty({B, P, o.height, o.width, 2}, uv.options());
  st.boxes = at::empty({B, P, 4}, uv.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_masks", [&] {
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    launch(B * P * o.height, BoneMasks<scalar_t>{cp.pr, st.masks.data_ptr<scalar_t>(), st.boxes.data_ptr<int64_t>()}, 8);
  });
  return st;
}

// Forward: the weight relaid out (validated [O, P*C, k, k] -> wt), the tap products as one
// batched matrix product over the bones, [P, 2B, C] x [P, C, k*k*Op], left to the BLAS (cuBLAS
// on CUDA), then the pixels. Returns (out, wt, taps).
template <typename Tiles, typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_forward(const at::Tensor& uv, const at::Tensor& feat,
                                                            const at::Tensor& bones, const at::Tensor& weight,
                                                            const at::Tensor& bias, const Options& o,
                                                            const Launch& launch) {
  const int64_t B = uv.size(0), C = feat.size(2), P = bones.size(0), O = weight.size(0), k = weight.size(2);
  ConvState st = conv_state(uv, feat, bones, O, k, o, launch);
  const int64_t kk = k * k, rows = P * C * kk;
  st.wt = fresh(launch, {P, C, kk, st.Op}, weight.options());
  st.taps = fresh(launch, {P, 2 * B, kk * st.Op}, uv.options());
  at::Tensor out = at::empty({B, O, o.height, o.width}, uv.options());
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_weight", [&] {
    const Transpose<scalar_t, Tiles::tile> wt{weight.const_data_ptr<scalar_t>(), O, rows, st.wt.data_ptr<scalar_t>(),
                                              rows, st.Op, st.Op};
    launch(wt.tasks(), wt);
  });
  if (rows == 0) {  // a convolution over no input channels: the bias
    st.taps.zero_();
    if (bias.defined()) out.copy_(bias.view({1, O, 1, 1}).expand_as(out));
    else out.zero_();
    return {out, st.wt, st.taps};
  }
  at::bmm_out(st.taps, st.ends, st.wt.view({P, C, kk * st.Op}));
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv", [&] {
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    const ConvForward<scalar_t, Tiles::x, Tiles::vec> body{
        cp, st.masks.const_data_ptr<scalar_t>(), st.boxes.const_data_ptr<int64_t>(), st.taps.const_data_ptr<scalar_t>(),
        bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>()};
    launch(body.tasks(), body);
  });
  return {out, st.wt, st.taps};
}

// wt and taps are the forward's (validated). grad_out may have any strides; it is copied only
// when its channels are not the innermost dimension (a channels-last gradient is read in place).
// The pixels give the taps' gradients gtaps (and the joint positions' share); the weight's and
// the endpoint features' gradients are then batched matrix products with them, as the taps are
// in the forward.
template <typename Tiles, typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_out, const at::Tensor& uv,
                                                             const at::Tensor& feat, const at::Tensor& bones,
                                                             const at::Tensor& weight, const at::Tensor& wt,
                                                             const at::Tensor& taps, const Options& o,
                                                             const Launch& launch) {
  const int64_t B = uv.size(0), J = uv.size(1), C = feat.size(2), P = bones.size(0);
  at::Tensor grad_uv = at::zeros_like(uv), grad_feat = at::zeros_like(feat);
  if (grad_out.numel() == 0 || B * P * C == 0)
    return {grad_uv, grad_feat, at::zeros_like(weight, at::MemoryFormat::Contiguous)};
  ConvState st = conv_state(uv, feat, bones, weight.size(0), weight.size(2), o, launch);
  st.wt = wt;
  st.taps = taps;
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
  // Per chunk of bones, [p, C, 2B] x [p, 2B, k*k*Op] -> [p*C*k*k, Op], transposed into the
  // weight's layout. On the CPU the chunk's buffer is reused, cache-sized: a fresh weight-sized
  // one would page-fault in on every call, which costs more than the product.
  at::Tensor grad_weight = fresh(launch, weight.sizes(), weight.options());
  const int64_t bone_bytes = C * kk * st.Op * int64_t(uv.element_size());
  const int64_t chunk = Tiles::grad_bytes ? std::clamp<int64_t>(Tiles::grad_bytes / bone_bytes, 1, P) : P;
  at::Tensor gw_rows = at::empty({chunk, C, kk * st.Op}, uv.options());
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t n = std::min(chunk, P - p0);
    at::Tensor rows_out = gw_rows.narrow(0, 0, n);
    at::bmm_out(rows_out, st.ends.narrow(0, p0, n).transpose(1, 2), gtaps.narrow(0, p0, n));
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_weight_grad", [&] {
      const Transpose<scalar_t, Tiles::tile> gw{gw_rows.const_data_ptr<scalar_t>(), n * C * kk, st.Op,
                                                grad_weight.data_ptr<scalar_t>() + p0 * C * kk, st.O, n * C * kk, rows};
      launch(gw.tasks(), gw);
    });
  }
  // [P, 2B, k*k*Op] x [P, k*k*Op, C] -> the endpoints' share [B, P, 2, C], gathered per joint
  const at::Tensor feat_partial = at::bmm(gtaps, st.wt.view({P, C, kk * st.Op}).transpose(1, 2))
                                      .view({P, B, 2, C})
                                      .permute({1, 0, 2, 3})
                                      .contiguous();
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_gather", [&] {
    const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st);
    launch(B * J * (C + 2),
           GatherJoints<scalar_t>{cp.pr, feat_partial.const_data_ptr<scalar_t>(), geom_partial.const_data_ptr<scalar_t>(),
                                  n_oc, grad_uv.data_ptr<scalar_t>(), grad_feat.data_ptr<scalar_t>()});
  });
  return {grad_uv, grad_feat, grad_weight};
}

struct ConvDeviceOps {
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*forward)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                            const at::Tensor&, const at::Tensor&, const Options&);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*backward)(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&, const Options&);
};

template <typename Tiles, typename Launch>
ConvDeviceOps make_conv_device_ops() {
  return {
      [](const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones, const at::Tensor& weight,
         const at::Tensor& bias, const Options& o) { return conv_forward<Tiles>(uv, feat, bones, weight, bias, o, Launch{}); },
      [](const at::Tensor& g, const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
         const at::Tensor& weight, const at::Tensor& wt, const at::Tensor& taps, const Options& o) {
        return conv_backward<Tiles>(g, uv, feat, bones, weight, wt, taps, o, Launch{});
      },
  };
}

ConvDeviceOps conv_cpu_ops();
ConvDeviceOps conv_cuda_ops();

}  // namespace handgeom::projection
