// Kernel bodies of the per-edge 2D graph convolution (SIA-GCN), shared by the CPU and CUDA
// launchers. For heads m, target nodes t and pixels (i, j):
//   out[b,m,t,i,j] = n_t sum_{e: tgt(e) = t} ( sum_{u,v} x[b,m,src(e), i+u-ph, j+v-pw] w[m,e,u,v] + bias[m,e] )
// with zero padding, ph = kh / 2, pw = kw / 2 (odd kernels: "same" cross-correlation, as conv2d),
// and n_t = 1 / in-degree(t) ("mean") or 1 ("sum"); a node without incoming edges outputs 0.
#pragma once

#include "common/device.h"

namespace handgeom::edge_conv {

// Edges grouped by target (incoming) and by source (outgoing), as CSR offsets into edge ids.
struct Graph {
  const int64_t* src;       // [E]
  const int64_t* tgt;       // [E]
  const int64_t* in_ptr;    // [K + 1]
  const int64_t* in_edge;   // [E] edge ids sorted by target
  const int64_t* out_ptr;   // [K + 1]
  const int64_t* out_edge;  // [E] edge ids sorted by source
  bool mean;

  HG_HOST_DEVICE double norm(int64_t t) const {
    const int64_t degree = in_ptr[t + 1] - in_ptr[t];
    return mean && degree > 0 ? 1.0 / double(degree) : 1.0;
  }
};

template <typename T>
struct Problem {
  const T* x;     // [B, Mx, K, H, W], Mx = 1 (shared by every head) or M
  const T* w;     // [M, E, kh, kw]
  const T* bias;  // [M, E] or nullptr
  Graph g;
  int64_t B, M, Mx, K, E, H, W, kh, kw;

  HG_HOST_DEVICE const T* map(const T* base, int64_t b, int64_t m, int64_t node, int64_t heads) const {
    return base + ((b * heads + m) * K + node) * H * W;
  }
  HG_HOST_DEVICE const T* kernel(int64_t m, int64_t e) const { return w + (m * E + e) * kh * kw; }
};

// Columns t of a tile starting at column j0 (n wide) for which j0 + t + shift lies in [0, W).
HG_HOST_DEVICE void valid_columns(int64_t j0, int64_t n, int64_t shift, int64_t W, int64_t& lo, int64_t& hi) {
  lo = hg_max(int64_t(0), -shift - j0);
  hi = hg_min(n, W - shift - j0);
}

// Forward, one task per (batch, head, target node, row, tile of kTile columns): every output
// pixel is a sum over the node's incoming edges and the kernel window; nothing per edge is
// stored. The CPU takes 32-pixel tiles (vectorized rows), CUDA single pixels.
template <typename T, int64_t kTile>
struct Forward {
  Problem<T> pr;
  T* out;  // [B, M, K, H, W]

  HG_HOST_DEVICE static int64_t tiles(int64_t W) { return (W + kTile - 1) / kTile; }

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t n_tiles = tiles(pr.W), j0 = (task % n_tiles) * kTile, row = task / n_tiles;
    const int64_t i = row % pr.H, bmt = row / pr.H, t = bmt % pr.K, bm = bmt / pr.K, m = bm % pr.M, b = bm / pr.M;
    const int64_t n = hg_min(kTile, pr.W - j0), ph = pr.kh / 2, pw = pr.kw / 2;
    T acc[kTile];
    for (int64_t c = 0; c < n; ++c) acc[c] = T(0);
    T bias_sum = T(0);
    for (int64_t k = pr.g.in_ptr[t]; k < pr.g.in_ptr[t + 1]; ++k) {
      const int64_t e = pr.g.in_edge[k];
      const T* xs = pr.map(pr.x, b, pr.Mx == 1 ? 0 : m, pr.g.src[e], pr.Mx);
      const T* we = pr.kernel(m, e);
      if (pr.bias) bias_sum += pr.bias[m * pr.E + e];
      for (int64_t u = 0; u < pr.kh; ++u) {
        const int64_t ii = i + u - ph;
        if (ii < 0 || ii >= pr.H) continue;
        const T* xrow = xs + ii * pr.W + j0 - pw;
        for (int64_t v = 0; v < pr.kw; ++v) {
          int64_t lo, hi;
          valid_columns(j0, n, v - pw, pr.W, lo, hi);
          const T wv = we[u * pr.kw + v];
          for (int64_t c = lo; c < hi; ++c) acc[c] += xrow[c + v] * wv;
        }
      }
    }
    const T norm = T(pr.g.norm(t));
    T* dst = out + (bmt * pr.H + i) * pr.W + j0;
    for (int64_t c = 0; c < n; ++c) dst[c] = (acc[c] + bias_sum) * norm;
  }
};

// Gradient for x, one task per (batch, x head, source node, row, tile): a gather over the node's
// outgoing edges (and over every head when x is shared): the transposed correlation.
template <typename T, int64_t kTile>
struct BackwardX {
  Problem<T> pr;
  const T* grad_out;  // [B, M, K, H, W]
  T* grad_x;          // [B, Mx, K, H, W]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t n_tiles = Forward<T, kTile>::tiles(pr.W), j0 = (task % n_tiles) * kTile, row = task / n_tiles;
    const int64_t i = row % pr.H, bms = row / pr.H, s = bms % pr.K, bm = bms / pr.K, mx = bm % pr.Mx, b = bm / pr.Mx;
    const int64_t n = hg_min(kTile, pr.W - j0), ph = pr.kh / 2, pw = pr.kw / 2;
    T acc[kTile];
    for (int64_t c = 0; c < n; ++c) acc[c] = T(0);
    const int64_t m0 = pr.Mx == 1 ? 0 : mx, m1 = pr.Mx == 1 ? pr.M : mx + 1;
    for (int64_t m = m0; m < m1; ++m) {
      for (int64_t k = pr.g.out_ptr[s]; k < pr.g.out_ptr[s + 1]; ++k) {
        const int64_t e = pr.g.out_edge[k], t = pr.g.tgt[e];
        const T* g = pr.map(grad_out, b, m, t, pr.M);
        const T* we = pr.kernel(m, e);
        const T norm = T(pr.g.norm(t));
        for (int64_t u = 0; u < pr.kh; ++u) {
          const int64_t ii = i - u + ph;  // output row that read x row i through tap u
          if (ii < 0 || ii >= pr.H) continue;
          const T* grow = g + ii * pr.W + j0 + pw;
          for (int64_t v = 0; v < pr.kw; ++v) {
            int64_t lo, hi;
            valid_columns(j0, n, pw - v, pr.W, lo, hi);
            const T wv = we[u * pr.kw + v] * norm;
            for (int64_t c = lo; c < hi; ++c) acc[c] += grow[c - v] * wv;
          }
        }
      }
    }
    T* dst = grad_x + (bms * pr.H + i) * pr.W + j0;
    for (int64_t c = 0; c < n; ++c) dst[c] = acc[c];
  }
};

// Reductions in kLanes independent partial sums, which the compiler vectorizes (a single
// accumulator would serialize on floating-point addition order).
template <int64_t kLanes, typename T>
HG_HOST_DEVICE void dot_lanes(const T* a, const T* b, int64_t lo, int64_t hi, T (&acc)[kLanes]) {
  int64_t j = lo;
  for (; j + kLanes <= hi; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  }
  for (int64_t l = 0; j < hi; ++j, ++l) acc[l] += a[j] * b[j];
}

template <int64_t kLanes, typename T>
HG_HOST_DEVICE void sum_in_lanes(const T* a, int64_t n, T (&acc)[kLanes]) {
  for (int64_t j = 0; j < n; ++j) acc[j % kLanes] += a[j];
}

template <int64_t kLanes, typename T>
HG_HOST_DEVICE T sum_lanes(const T (&acc)[kLanes]) {
  T total = T(0);
  for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

// Gradient for one row of kernel taps w[m,e,u,:] (and, for u = 0, bias[m,e]): sums over batch
// and pixels, one task per (head, edge, kernel row). A row of grad_out is reused for every v of
// the kernel row while it is in cache.
template <typename T>
struct BackwardW {
  Problem<T> pr;
  const T* grad_out;
  T* grad_w;     // [M, E, kh, kw], zero-initialized
  T* grad_bias;  // [M, E]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t u = task % pr.kh, me = task / pr.kh, e = me % pr.E, m = me / pr.E;
    const int64_t ph = pr.kh / 2, pw = pr.kw / 2, s = pr.g.src[e], t = pr.g.tgt[e];
    constexpr int64_t kLanes = 8;
    T* gw = grad_w + task * pr.kw;
    T bias_lanes[kLanes] = {};
    for (int64_t b = 0; b < pr.B; ++b) {
      const T* xs = pr.map(pr.x, b, pr.Mx == 1 ? 0 : m, s, pr.Mx);
      const T* g = pr.map(grad_out, b, m, t, pr.M);
      for (int64_t i = 0; i < pr.H; ++i) {
        const int64_t ii = i + u - ph;
        if (ii < 0 || ii >= pr.H) continue;
        const T* grow = g + i * pr.W;
        for (int64_t v = 0; v < pr.kw; ++v) {
          int64_t lo, hi;
          valid_columns(0, pr.W, v - pw, pr.W, lo, hi);
          T lanes[kLanes] = {};
          dot_lanes(grow, xs + ii * pr.W + v - pw, lo, hi, lanes);
          gw[v] += sum_lanes(lanes);
        }
      }
      if (u == 0) sum_in_lanes(g, pr.H * pr.W, bias_lanes);
    }
    const T norm = T(pr.g.norm(t));
    for (int64_t v = 0; v < pr.kw; ++v) gw[v] *= norm;
    if (u == 0) grad_bias[me] = sum_lanes(bias_lanes) * norm;
  }
};

}  // namespace handgeom::edge_conv
