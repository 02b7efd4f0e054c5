// Host side of bone_plane_conv: the launch sequence, written once and instantiated by
// plane_conv_cpu.cpp and plane_conv_cuda.cu with their launcher and chunk sizes. The batched
// matrix products (the per-bone tap products and their gradients) are ATen calls,
// device-generic; the weight's relayouts are the Transpose body.
//
// Both passes walk the bones in groups: per group, the masks are drawn, the weight's slice is
// relaid out and the tap products formed, in buffers reused from group to group. So beyond its
// output the forward holds one group's scratch, and the backward recomputes the group's masks
// and taps (0.2 GMAC at DIR's sizes) instead of keeping them all from the forward, which at
// DIR's 32x32 stage would be 40 MB, more than twice the output.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <tuple>

#include "projection/plane_conv_kernels.h"
#include "projection/projection.h"

namespace handgeom::projection {

// Output channels are padded with zeros to a multiple of kChannelPad, the largest vector chunk
// of any launcher.
constexpr int64_t kChannelPad = 32;
inline int64_t padded_channels(int64_t O) { return (O + kChannelPad - 1) / kChannelPad * kChannelPad; }

// Chunk sizes of one device. kVec: output channels per vector chunk (divides kChannelPad); kX:
// output columns per forward task; kTile: the side of a weight-transpose task; kForwardBytes,
// kBackwardBytes: each pass takes the bones in groups of about this many bytes of scratch (the
// forward's may be larger: it is freed before the backward, whose peak also holds the output,
// the weight's gradient and a block of the incoming gradient, and fewer groups mean fewer passes
// over the output); kCopyChannels: the backward copies a gradient that is not channels-last this
// many channels at a time (a multiple of kChannelPad; 0: all at once).
template <int64_t kVec, int64_t kX, int64_t kTile, int64_t kForwardBytes, int64_t kBackwardBytes, int64_t kCopyChannels>
struct ConvTiles {
  static_assert(kChannelPad % kVec == 0 && kCopyChannels % kChannelPad == 0);
  static constexpr int64_t vec = kVec, x = kX, tile = kTile, forward_bytes = kForwardBytes,
                           backward_bytes = kBackwardBytes, copy_channels = kCopyChannels;
};

// What a pass over a block of output channels [o0, o0 + O) needs: the endpoint features as
// [P, 2B, C] (row (b, s) of bone p is f[b, bones[p, s]]), the block's padded width Op and the
// kernel side. The forward takes all channels as one block.
struct ConvState {
  at::Tensor ends;
  int64_t o0, O, Op, k;

  ConvState block(int64_t first, int64_t count) const { return {ends, first, count, padded_channels(count), k}; }
};

inline ConvState conv_state(const at::Tensor& feat, const at::Tensor& bones, const at::Tensor& weight) {
  const int64_t B = feat.size(0), C = feat.size(2), P = bones.size(0), O = weight.size(0);
  const at::Tensor ends =
      feat.index_select(1, bones.reshape(-1)).view({B, P, 2, C}).permute({1, 0, 2, 3}).reshape({P, 2 * B, C});
  return {ends, 0, O, padded_channels(O), weight.size(2)};
}

// One group's scratch, handed to the visitor of for_each_bone_group.
struct BoneGroup {
  int64_t p0, n;           // bones [p0, p0 + n)
  at::Tensor masks, boxes;  // [B, n, H, W, 2], [B, n, 4]
  at::Tensor wt;            // the block's weight relaid out, [n, C, k*k*Op]: weight[o0 + o, (p0 + i) C k^2 + r] -> wt[i, r, o]
  at::Tensor taps;          // its tap products, [n, 2B, k*k*Op] = [n, 2B, C] x wt
};

template <typename T>
ConvProblem<T> make_conv_problem(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                                 const Options& o, const ConvState& st, const BoneGroup& g) {
  return {make_problem<T>(uv, feat, bones, o), st.O, st.Op, st.k, g.p0, g.n};
}

// Calls visit(group) for consecutive groups of bones (P > 0, C > 0), each with about `budget`
// bytes of scratch (masks, relaid-out weight, taps, and the backward's tap gradients); the
// buffers are reused, and visit may overwrite group.wt once it is done with it.
// The tap products are one batched matrix product, left to the BLAS (cuBLAS on CUDA).
template <typename Tiles, typename Launch, typename Visit>
void for_each_bone_group(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                         const at::Tensor& weight, const Options& o, const ConvState& st, int64_t budget,
                         const Launch& launch, const Visit& visit) {
  const int64_t B = uv.size(0), P = bones.size(0), C = feat.size(2), kk = st.k * st.k, cols = P * C * kk;
  const int64_t pixels = o.height * o.width;
  const int64_t bone_bytes = ((C + 4 * B) * kk * st.Op + 2 * B * pixels) * int64_t(uv.element_size());
  const int64_t size = std::clamp<int64_t>(budget / bone_bytes, 1, P);
  const at::Tensor masks = at::empty({B * size * pixels * 2}, uv.options());
  const at::Tensor boxes = at::empty({B * size * 4}, uv.options().dtype(at::kLong));
  const at::Tensor wt = at::empty({size, C, kk * st.Op}, uv.options());
  const at::Tensor taps = at::empty({size, 2 * B, kk * st.Op}, uv.options());
  for (int64_t p0 = 0; p0 < P; p0 += size) {
    const int64_t n = std::min(size, P - p0);
    BoneGroup g{p0, n, masks.narrow(0, 0, B * n * pixels * 2).view({B, n, o.height, o.width, 2}),
                boxes.narrow(0, 0, B * n * 4).view({B, n, 4}), wt.narrow(0, 0, n), taps.narrow(0, 0, n)};
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_group", [&] {
      const auto cp = make_conv_problem<scalar_t>(uv, feat, bones, o, st, g);
      launch(B * n * o.height, BoneMasks<scalar_t>{cp, g.masks.data_ptr<scalar_t>(), g.boxes.data_ptr<int64_t>()}, 8);
      const Transpose<scalar_t, Tiles::tile> relayout{weight.const_data_ptr<scalar_t>() + st.o0 * cols + p0 * C * kk,
                                                      st.O, cols, g.wt.data_ptr<scalar_t>(), n * C * kk, st.Op, st.Op};
      launch(relayout.tasks(), relayout);
    });
    at::bmm_out(g.taps, st.ends.narrow(0, p0, n), g.wt);
    visit(g);
  }
}

// Forward: out filled with the bias, then each group of bones adds its pixels' taps.
template <typename Tiles, typename Launch>
at::Tensor conv_forward(const at::Tensor& uv, const at::Tensor& feat, const at::Tensor& bones,
                        const at::Tensor& weight, const at::Tensor& bias, const Options& o, const Launch& launch) {
  const int64_t B = uv.size(0), C = feat.size(2), P = bones.size(0), O = weight.size(0);
  at::Tensor out = at::empty({B, O, o.height, o.width}, uv.options());
  if (bias.defined()) out.copy_(bias.view({1, O, 1, 1}).expand_as(out));
  else out.zero_();
  if (out.numel() == 0 || P * C == 0) return out;  // no input channels: the bias alone
  const ConvState st = conv_state(feat, bones, weight);
  for_each_bone_group<Tiles>(uv, feat, bones, weight, o, st, Tiles::forward_bytes, launch, [&](const BoneGroup& g) {
    AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv", [&] {
      const ConvForward<scalar_t, Tiles::x, Tiles::vec> body{make_conv_problem<scalar_t>(uv, feat, bones, o, st, g),
                                                             g.masks.const_data_ptr<scalar_t>(),
                                                             g.boxes.const_data_ptr<int64_t>(),
                                                             g.taps.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>()};
      launch(body.tasks(), body);
    });
  });
  return out;
}

// The pixels read the incoming gradient with its channels innermost. A channels-last grad_out is
// read in place, all channels in one pass; any other layout is copied to channels-last a block
// of Tiles::copy_channels channels at a time (0: all at once), each block a pass of its own, so
// that the copy is a block's, not grad_out's (16 MB at DIR's 32x32 stage). Reading NCHW in place
// is no option on the CPU: a 32x32 channel plane is 4 KiB, and the 32 channels of a vector chunk
// then share one L1 set. Per block and group of bones, the pixels give the taps' gradients gtaps
// (and the joint positions' share); the endpoint features' and the weight's gradients are then
// batched matrix products with them, as the taps are in the forward (the weight's gradient rows
// reuse the group's wt buffer once the features' product has read it).
template <typename Tiles, typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_out, const at::Tensor& uv,
                                                             const at::Tensor& feat, const at::Tensor& bones,
                                                             const at::Tensor& weight, const Options& o,
                                                             const Launch& launch) {
  const int64_t B = uv.size(0), J = uv.size(1), C = feat.size(2), P = bones.size(0), O = weight.size(0);
  at::Tensor grad_uv = at::zeros_like(uv), grad_feat = at::zeros_like(feat);
  if (grad_out.numel() == 0 || B * P * C == 0)
    return {grad_uv, grad_feat, at::zeros_like(weight, at::MemoryFormat::Contiguous)};
  const ConvState all = conv_state(feat, bones, weight);
  const int64_t kk = all.k * all.k, cols = P * C * kk;
  const bool in_place = grad_out.stride(1) == 1;
  const int64_t block = in_place || Tiles::copy_channels == 0 ? O : Tiles::copy_channels;
  int64_t chunks = 0;  // vector chunks of output channels over all blocks
  for (int64_t o0 = 0; o0 < O; o0 += block) chunks += all.block(o0, std::min(block, O - o0)).Op / Tiles::vec;
  at::Tensor geom_partial = at::empty({B, P, chunks, 4}, uv.options());
  at::Tensor feat_partial = at::empty({P, 2 * B, C}, uv.options());
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  launch.fresh_output(grad_weight);
  for (int64_t o0 = 0, chunk0 = 0; o0 < O; o0 += block) {
    const ConvState st = all.block(o0, std::min(block, O - o0));
    const at::Tensor g = in_place ? grad_out.narrow(1, o0, st.O)
                                  : grad_out.narrow(1, o0, st.O).contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor gtaps_buf;  // allocated for the first group, the largest
    for_each_bone_group<Tiles>(uv, feat, bones, weight, o, st, Tiles::backward_bytes, launch, [&](const BoneGroup& grp) {
      if (!gtaps_buf.defined()) gtaps_buf = at::empty_like(grp.taps);
      at::Tensor gtaps = gtaps_buf.narrow(0, 0, grp.n);
      AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_backward", [&] {
        const ConvBackwardBone<scalar_t, Tiles::vec> body{
            make_conv_problem<scalar_t>(uv, feat, bones, o, st, grp), grp.masks.const_data_ptr<scalar_t>(),
            grp.boxes.const_data_ptr<int64_t>(), grp.taps.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
            g.stride(0), g.stride(1), g.stride(2), g.stride(3), gtaps.data_ptr<scalar_t>(),
            geom_partial.data_ptr<scalar_t>(), chunks, chunk0};
        launch(body.tasks(), body);
      });
      // [n, 2B, k*k*Op] x [n, k*k*Op, C] -> the group's endpoint features' share, summed over blocks
      at::Tensor fp = feat_partial.narrow(0, grp.p0, grp.n);
      if (o0 == 0) at::bmm_out(fp, gtaps, grp.wt.transpose(1, 2));
      else fp.baddbmm_(gtaps, grp.wt.transpose(1, 2));
      // [n, C, 2B] x [n, 2B, k*k*Op] -> [n*C*k*k, Op], transposed into the block's rows of the weight
      at::Tensor gw_rows = grp.wt;
      at::bmm_out(gw_rows, st.ends.narrow(0, grp.p0, grp.n).transpose(1, 2), gtaps);
      AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_weight_grad", [&] {
        const int64_t rows = grp.n * C * kk;
        const Transpose<scalar_t, Tiles::tile> gw{gw_rows.const_data_ptr<scalar_t>(), rows, st.Op,
                                                  grad_weight.data_ptr<scalar_t>() + o0 * cols + grp.p0 * C * kk,
                                                  st.O, rows, cols};
        launch(gw.tasks(), gw);
      });
    });
    chunk0 += st.Op / Tiles::vec;
  }
  const at::Tensor feat_by_sample = feat_partial.view({P, B, 2, C}).permute({1, 0, 2, 3}).contiguous();
  AT_DISPATCH_FLOATING_TYPES(uv.scalar_type(), "bone_plane_conv_gather", [&] {
    launch(B * J * (C + 2),
           GatherJoints<scalar_t>{make_problem<scalar_t>(uv, feat, bones, o), feat_by_sample.const_data_ptr<scalar_t>(),
                                  geom_partial.const_data_ptr<scalar_t>(), chunks, grad_uv.data_ptr<scalar_t>(),
                                  grad_feat.data_ptr<scalar_t>()});
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
