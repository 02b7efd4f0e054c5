// Host side of the per-edge graph convolution: the graph's CSR tensors and the launch sequences,
// written once and instantiated by edge_conv_cpu.cpp and edge_conv_cuda.cu with their launcher.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <tuple>

#include "edge_conv/edge_conv_kernels.h"

namespace handgeom::edge_conv {

using at::Tensor;

// Edges grouped by target and by source (built with ATen ops on the edges' device).
struct GraphTensors {
  Tensor src, tgt, in_ptr, in_edge, out_ptr, out_edge;
  bool mean;

  Graph view() const {
    return {src.data_ptr<int64_t>(),     tgt.data_ptr<int64_t>(),    in_ptr.data_ptr<int64_t>(),
            in_edge.data_ptr<int64_t>(), out_ptr.data_ptr<int64_t>(), out_edge.data_ptr<int64_t>(), mean};
  }
};

// x [B, Mx, K, H, W], weight [M, E, kh, kw], bias [M, E] or undefined; validated, contiguous.
template <typename T>
Problem<T> make_problem(const Tensor& x, const Tensor& w, const Tensor& bias, const GraphTensors& g) {
  return {x.data_ptr<T>(), w.data_ptr<T>(), bias.defined() ? bias.data_ptr<T>() : nullptr, g.view(),
          x.size(0), w.size(0), x.size(1), x.size(2), w.size(1), x.size(3), x.size(4), w.size(2), w.size(3)};
}

template <int64_t kTile, typename Launch>
Tensor forward(const Tensor& x, const Tensor& w, const Tensor& bias, const GraphTensors& g, const Launch& launch) {
  const int64_t B = x.size(0), M = w.size(0), K = x.size(2), H = x.size(3), W = x.size(4);
  Tensor out = at::empty({B, M, K, H, W}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "edge_conv2d", [&] {
    using Body = Forward<scalar_t, kTile>;
    launch(B * M * K * H * Body::tiles(W), Body{make_problem<scalar_t>(x, w, bias, g), out.data_ptr<scalar_t>()});
  });
  return out;
}

template <int64_t kTile, typename Launch>
std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& grad_out, const Tensor& x, const Tensor& w,
                                            const GraphTensors& g, const Launch& launch) {
  const int64_t B = x.size(0), Mx = x.size(1), K = x.size(2), H = x.size(3), W = x.size(4);
  Tensor grad_x = at::zeros_like(x), grad_w = at::zeros_like(w);
  Tensor grad_bias = at::zeros({w.size(0), w.size(1)}, w.options());
  if (grad_out.numel() == 0) return {grad_x, grad_w, grad_bias};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "edge_conv2d_backward", [&] {
    const Problem<scalar_t> pr = make_problem<scalar_t>(x, w, Tensor(), g);
    using BodyX = BackwardX<scalar_t, kTile>;
    launch(B * Mx * K * H * Forward<scalar_t, kTile>::tiles(W),
           BodyX{pr, grad_out.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>()});
    launch(w.size(0) * w.size(1) * w.size(2), BackwardW<scalar_t>{pr, grad_out.data_ptr<scalar_t>(),
                                                                  grad_w.data_ptr<scalar_t>(),
                                                                  grad_bias.data_ptr<scalar_t>()});
  });
  return {grad_x, grad_w, grad_bias};
}

// The entry points of one device (edge_conv_cpu.cpp, edge_conv_cuda.cu); edge_conv.cpp validates.
struct DeviceOps {
  Tensor (*forward)(const Tensor&, const Tensor&, const Tensor&, const GraphTensors&);
  std::tuple<Tensor, Tensor, Tensor> (*backward)(const Tensor&, const Tensor&, const Tensor&, const GraphTensors&);
};

// kTile: output columns per task (the CPU vectorizes 32-pixel rows; a CUDA thread takes a pixel).
template <int64_t kTile, typename Launch>
DeviceOps make_device_ops() {
  return {
      [](const Tensor& x, const Tensor& w, const Tensor& b, const GraphTensors& g) {
        return forward<kTile>(x, w, b, g, Launch{});
      },
      [](const Tensor& go, const Tensor& x, const Tensor& w, const GraphTensors& g) {
        return backward<kTile>(go, x, w, g, Launch{});
      },
  };
}

DeviceOps cpu_ops();
DeviceOps cuda_ops();

}  // namespace handgeom::edge_conv
