// Kernel bodies of bone_plane_conv, shared by the CPU and CUDA launchers: the convolution of the
// multi-plane projection (projection_kernels.h) without the planes. With plane p's value at
// pixel s being ma_p(s) f_a + mb_p(s) f_b (ma = m w_a, mb = m w_b), and W_{p,t} the [O, C] slice
// of the weight for plane p and tap t = (dy, dx) of a k x k kernel (h = k / 2),
//   out[o, q] = bias[o] + sum_p sum_t ma_p(q + d_t) A[p,t,o] + mb_p(q + d_t) B[p,t,o],
//   A[p,t,:] = W_{p,t} f_a,  B[p,t,:] = W_{p,t} f_b,  d_t = (dy - h, dx - h),
// by linearity; ma_p, mb_p are 0 outside the bone's box, so only lit pixels are visited.
//
// The tap products A, B and, in the backward, the weight's and the features' gradients from the
// taps' gradients are batched matrix products per bone, left to the BLAS (plane_conv.h); the
// kernels here are the per-pixel work. The host runs them on a group of bones at a time, so
// that the tap products and the weight's relayout exist for one group only. Layouts (O padded
// to Op, a multiple of the launcher's vector chunk, with zeros):
//   masks [B, n, H, W, 2] (ma, mb) and boxes [B, n, 4] (i0, i1, j0, j1) of a group of n bones
//   taps  [n, B, 2, k*k, Op]  their A and B      gtaps: their gradients, same layout
#pragma once

#include "projection/projection_kernels.h"

namespace handgeom::projection {

template <typename T>
struct ConvProblem {
  Problem<T> pr;
  int64_t O, Op, k;  // output channels, padded, kernel side (odd)
  int64_t p0, n;     // the group of bones [p0, p0 + n) a launch covers (masks, boxes, taps hold those)

  HG_HOST_DEVICE int64_t taps() const { return k * k; }
  HG_HOST_DEVICE int64_t half() const { return k / 2; }
};

// a[0] + ... + a[N - 1] as a tree of N / 2, N / 4, ... lanes (a vector add per level when N is
// a power of two; a sequential float sum could not be vectorized). Destroys a.
template <int64_t N, typename T>
HG_CLONE_INLINE T tree_sum(T* a) {
  if constexpr (N > 1) {
    constexpr int64_t half = N / 2;
    for (int64_t j = 0; j < half; ++j) a[j] += a[j + half];
    if constexpr (N % 2) a[0] += a[N - 1];
    return tree_sum<half>(a);
  } else {
    return a[0];
  }
}

// The weight's two layout changes, [O, P*C*k*k] <-> [P*C*k*k, Op], as one tiled transpose:
// dst[i, j] = src[j, i] for j < src_rows and 0 beyond (the padded channels), one task per
// kTile x kTile tile of dst (rows of dst_ld, src rows of src_ld). ATen's own transposing copy
// is single-threaded on the CPU, and this one runs on the launcher's pool.
template <typename T, int64_t kTile>
struct Transpose {
  const T* src;
  int64_t src_rows, src_ld;
  T* dst;
  int64_t dst_rows, dst_cols, dst_ld;

  HG_HOST_DEVICE int64_t col_tiles() const { return (dst_cols + kTile - 1) / kTile; }
  HG_HOST_DEVICE int64_t tasks() const { return (dst_rows + kTile - 1) / kTile * col_tiles(); }

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t i0 = task / col_tiles() * kTile, j0 = task % col_tiles() * kTile;
    const int64_t i1 = hg_min(i0 + kTile, dst_rows), j1 = hg_min(j0 + kTile, dst_cols);
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = j0; j < j1; ++j) dst[i * dst_ld + j] = j < src_rows ? src[j * src_ld + i] : T(0);
  }
};

// One task per (batch, bone of the group, row): the row's ma, mb (0 outside the mask), exactly
// as the projection's forward computes them; the row-0 task also writes the bone's box. Compiled
// for the baseline ISA like ForwardTile, so both ops light the same pixels with the same weights.
template <typename T>
struct BoneMasks {
  ConvProblem<T> cp;
  T* masks;
  int64_t* boxes;

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const Problem<T>& pr = cp.pr;
    const int64_t i = task % pr.H, bg = task / pr.H, p = cp.p0 + bg % cp.n, b = bg / cp.n;
    const int64_t ja = pr.bones[2 * p], jb = pr.bones[2 * p + 1];
    const Vec2<T> a = pr.joint_px(b, ja), bb = pr.joint_px(b, jb);
    const PixelBox box = bone_box(pr, a, bb);
    if (i == 0) {
      int64_t* bx = boxes + bg * 4;
      bx[0] = box.i0;
      bx[1] = box.i1;
      bx[2] = box.j0;
      bx[3] = box.j1;
    }
    T* row = masks + (bg * pr.H + i) * pr.W * 2;
    const bool in_rows = i >= box.i0 && i < box.i1;
    for (int64_t j = 0; j < pr.W; ++j) {
      T ma = T(0), mb = T(0);
      if (in_rows && j >= box.j0 && j < box.j1) {
        const PixelGeometry<T> g = pixel_geometry(pr, Vec2<T>{T(j) + T(0.5), T(i) + T(0.5)}, a, bb);
        if (g.m > T(0)) {
          ma = g.m * g.wa;
          mb = g.m * g.wb;
        }
      }
      row[2 * j] = ma;
      row[2 * j + 1] = mb;
    }
  }
};

// Forward, one task per (batch, chunk of kO output channels, row, tile of kX columns): each
// output element has one writer per launch; per bone of the group whose box (grown by h)
// reaches the tile, per tap, each lit source pixel adds ma A + mb B, and the sum is added to
// out (which the host fills with the bias first). A tile no bone reaches is not touched. The
// CPU takes 8 x 32 tiles, CUDA single elements (x fastest across threads: a warp's stores are
// contiguous).
template <typename T, int64_t kX, int64_t kO>
struct ConvForward {
  ConvProblem<T> cp;
  const T* masks;
  const int64_t* boxes;
  const T* taps;
  T* out;  // [B, O, H, W], accumulated into

  HG_HOST_DEVICE int64_t x_tiles() const { return (cp.pr.W + kX - 1) / kX; }
  HG_HOST_DEVICE int64_t tasks() const { return cp.pr.B * (cp.Op / kO) * cp.pr.H * x_tiles(); }

  HG_CPU_CLONES HG_HOST_DEVICE void operator()(int64_t task) const {
    const Problem<T>& pr = cp.pr;
    const int64_t n_xt = x_tiles(), n_oc = cp.Op / kO, kk = cp.taps(), h = cp.half();
    const int64_t xt = task % n_xt, r = task / n_xt, y = r % pr.H, r2 = r / pr.H;
    const int64_t oc = r2 % n_oc, b = r2 / n_oc;
    const int64_t x0 = xt * kX, nx = hg_min(kX, pr.W - x0), o0 = oc * kO;
    T acc[kX][kO];
    for (int64_t xi = 0; xi < kX; ++xi)
      for (int64_t o = 0; o < kO; ++o) acc[xi][o] = T(0);
    bool reached = false;
    for (int64_t pg = 0; pg < cp.n; ++pg) {
      const int64_t bg = b * cp.n + pg;
      const int64_t* bx = boxes + bg * 4;
      const int64_t i0 = bx[0], i1 = bx[1], j0 = bx[2], j1 = bx[3];
      if (y + h < i0 || y - h >= i1 || x0 + nx - 1 + h < j0 || x0 - h >= j1) continue;
      reached = true;
      const T* mp = masks + bg * pr.H * pr.W * 2;
      const T* tp = taps + (pg * pr.B + b) * 2 * kk * cp.Op + o0;
      for (int64_t dy = 0; dy < cp.k; ++dy) {
        const int64_t sy = y + dy - h;
        if (sy < i0 || sy >= i1) continue;
        for (int64_t dx = 0; dx < cp.k; ++dx) {
          const int64_t t = dy * cp.k + dx;
          const T* ta = tp + t * cp.Op;
          const T* tb = ta + kk * cp.Op;
          for (int64_t xi = 0; xi < nx; ++xi) {
            const int64_t sx = x0 + xi + dx - h;
            if (sx < j0 || sx >= j1) continue;
            const T ma = mp[(sy * pr.W + sx) * 2], mb = mp[(sy * pr.W + sx) * 2 + 1];
            if (ma == T(0) && mb == T(0)) continue;  // unlit (a lit pixel has ma + mb = m > 0)
            for (int64_t o = 0; o < kO; ++o) acc[xi][o] += ma * ta[o] + mb * tb[o];
          }
        }
      }
    }
    if (!reached) return;
    const int64_t no = hg_min(kO, cp.O - o0);
    for (int64_t o = 0; o < no; ++o) {
      T* dst = out + ((b * cp.O + o0 + o) * pr.H + y) * pr.W + x0;
      for (int64_t xi = 0; xi < nx; ++xi) dst[xi] += acc[xi][o];
    }
  }
};

// Backward through the pixels, one task per (batch, bone of the group, chunk of kO output
// channels): over the bone's lit pixels s and taps t with q = s - d_t in the image,
//   gtaps[b,p,0,t,o] = sum_s ma(s) g[o,q],  gtaps[b,p,1,t,o] = sum_s mb(s) g[o,q],
// and per pixel the tap sums sa = sum_{t,o} A[t,o] g[o,q], sb likewise (dL/d ma, dL/d mb), which
// give the chunk's share of the joint-position gradient (add_geometry_grad). g is read through
// its strides (the host passes a channels-last gradient so that a chunk is one contiguous run).
template <typename T, int64_t kO>
struct ConvBackwardBone {
  ConvProblem<T> cp;
  const T* masks;
  const int64_t* boxes;
  const T* taps;
  const T* grad_out;  // [B, O, H, W] with strides (sB, sO, sH, sW)
  int64_t sB, sO, sH, sW;
  T* gtaps;             // the group's, written whole (chunk by chunk) by its tasks
  T* geom_partial;      // [B, P, geom_chunks, 4]: this launch writes chunks [geom_chunk0, + Op / kO)
  int64_t geom_chunks, geom_chunk0;

  HG_HOST_DEVICE int64_t chunks() const { return cp.Op / kO; }
  HG_HOST_DEVICE int64_t tasks() const { return cp.pr.B * cp.n * chunks(); }

  HG_CPU_CLONES HG_HOST_DEVICE void operator()(int64_t task) const {
    const Problem<T>& pr = cp.pr;
    const int64_t n_oc = chunks(), kk = cp.taps(), h = cp.half();
    const int64_t oc = task % n_oc, r = task / n_oc, pg = r % cp.n, b = r / cp.n, o0 = oc * kO;
    const int64_t p = cp.p0 + pg, bg = b * cp.n + pg;
    const bool full = o0 + kO <= cp.O;  // no padded channel in the chunk
    const int64_t* bx = boxes + bg * 4;
    const T* mp = masks + bg * pr.H * pr.W * 2;
    const T* ta = taps + (pg * pr.B + b) * 2 * kk * cp.Op + o0;
    const T* tb = ta + kk * cp.Op;
    T* ga = gtaps + (pg * pr.B + b) * 2 * kk * cp.Op + o0;
    T* gb = ga + kk * cp.Op;
    for (int64_t t = 0; t < kk; ++t)
      for (int64_t o = 0; o < kO; ++o) ga[t * cp.Op + o] = gb[t * cp.Op + o] = T(0);
    const int64_t ja = pr.bones[2 * p], jb = pr.bones[2 * p + 1];
    const Vec2<T> a = pr.joint_px(b, ja), bb = pr.joint_px(b, jb);
    Vec2<T> grad_a{T(0), T(0)}, grad_b{T(0), T(0)};
    const T* g_sample = grad_out + b * sB + o0 * sO;
    for (int64_t sy = bx[0]; sy < bx[1]; ++sy) {
      for (int64_t sx = bx[2]; sx < bx[3]; ++sx) {
        const T ma = mp[(sy * pr.W + sx) * 2], mb = mp[(sy * pr.W + sx) * 2 + 1];
        if (ma == T(0) && mb == T(0)) continue;
        T sav[kO], sbv[kO];
        for (int64_t o = 0; o < kO; ++o) sav[o] = sbv[o] = T(0);
        for (int64_t dy = 0; dy < cp.k; ++dy) {
          const int64_t qy = sy - dy + h;
          if (qy < 0 || qy >= pr.H) continue;
          for (int64_t dx = 0; dx < cp.k; ++dx) {
            const int64_t qx = sx - dx + h;
            if (qx < 0 || qx >= pr.W) continue;
            const int64_t t = dy * cp.k + dx;
            const T* g = g_sample + qy * sH + qx * sW;
            T gv[kO];
            if (full && sO == 1) {
              for (int64_t o = 0; o < kO; ++o) gv[o] = g[o];
            } else {
              for (int64_t o = 0; o < kO; ++o) gv[o] = o0 + o < cp.O ? g[o * sO] : T(0);
            }
            T* gat = ga + t * cp.Op;
            T* gbt = gb + t * cp.Op;
            const T* tat = ta + t * cp.Op;
            const T* tbt = tb + t * cp.Op;
            for (int64_t o = 0; o < kO; ++o) {
              gat[o] += ma * gv[o];
              gbt[o] += mb * gv[o];
              sav[o] += tat[o] * gv[o];
              sbv[o] += tbt[o] * gv[o];
            }
          }
        }
        const T sa = tree_sum<kO>(sav), sb = tree_sum<kO>(sbv);
        const PixelGeometry<T> geo = pixel_geometry(pr, Vec2<T>{T(sx) + T(0.5), T(sy) + T(0.5)}, a, bb);
        if (geo.m > T(0)) add_geometry_grad(pr, geo, sa, sb, grad_a, grad_b);
      }
    }
    T* geom = geom_partial + ((b * pr.P + p) * geom_chunks + geom_chunk0 + oc) * 4;
    geom[0] = grad_a.x;
    geom[1] = grad_a.y;
    geom[2] = grad_b.x;
    geom[3] = grad_b.y;
  }
};

}  // namespace handgeom::projection
