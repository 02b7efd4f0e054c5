// Kernel bodies of the multi-plane joint-to-feature projection (DIR, ICCV 2023), shared by the
// CPU and CUDA launchers. Plane p of the output holds, at pixel centre x,
//   m(d(x, ab)) * (w_a f_a + w_b f_b),   w_a = |x-b| / (|x-a| + |x-b|),   w_b = 1 - w_a,
// for bone p = (a, b); m is a hard disc of `radius` pixels or a Gaussian truncated at 4 sigma.
#pragma once

#include "common/device.h"
#include "common/vec.h"

namespace handgeom::projection {

enum Profile : int64_t { kHard = 0, kGaussian = 1 };

// Everything a body needs, as raw pointers (contiguous) and sizes.
template <typename T>
struct Problem {
  const T* uv;           // [B, J, 2] normalized (u, v) in [-1, 1]
  const T* feat;         // [B, J, C]
  const int64_t* bones;  // [P, 2] (parent, child), validated to lie in [0, J)
  int64_t B, J, C, P, H, W;
  int64_t profile;
  T radius, sigma;  // pixels

  // m(d) = 0 for d >= reach.
  HG_HOST_DEVICE T reach() const { return profile == kHard ? radius : T(4) * sigma; }

  HG_HOST_DEVICE Vec2<T> joint_px(int64_t b, int64_t j) const {
    const T* q = uv + (b * J + j) * 2;
    return {(q[0] + T(1)) * T(0.5) * T(W), (q[1] + T(1)) * T(0.5) * T(H)};
  }
  HG_HOST_DEVICE const T* joint_feat(int64_t b, int64_t j) const { return feat + (b * J + j) * C; }
};

// Pixel rows/columns [i0, i1) x [j0, j1) whose centres can lie within `reach` of segment ab.
struct PixelBox {
  int64_t i0, i1, j0, j1;
};

template <typename T>
HG_HOST_DEVICE PixelBox bone_box(const Problem<T>& pr, Vec2<T> a, Vec2<T> b) {
  // Grown by 1e-3 px so rounding never leaves out a pixel that pixel_geometry would light.
  const T r = pr.reach() + T(1e-3);
  // Centre of pixel k is k + 0.5; clamp in floating point before converting (huge or NaN
  // coordinates must still give indices inside the image), and again as integers.
  auto first = [](T lo, int64_t n) {
    return hg_min(int64_t(ceil(hg_clamp(lo - T(0.5), T(0), T(n)))), n);
  };
  auto last = [](T hi, int64_t n) {
    return hg_min(int64_t(floor(hg_clamp(hi - T(0.5), T(-1), T(n - 1)))) + 1, n);
  };
  return {first(hg_min(a.y, b.y) - r, pr.H), last(hg_max(a.y, b.y) + r, pr.H),
          first(hg_min(a.x, b.x) - r, pr.W), last(hg_max(a.x, b.x) + r, pr.W)};
}

// Mask, weights and the intermediates their derivatives need, for pixel centre x and bone ab.
template <typename T>
struct PixelGeometry {
  T m, wa, wb;
  T t;                 // closest segment point q = a + t (b - a)
  T ra, rb;            // |x - a|, |x - b|
  Vec2<T> xa, xb, xq;  // x - a, x - b, x - q
};

template <typename T>
HG_HOST_DEVICE PixelGeometry<T> pixel_geometry(const Problem<T>& pr, Vec2<T> x, Vec2<T> a,
                                               Vec2<T> b) {
  PixelGeometry<T> g;
  const Vec2<T> ab = b - a;
  const T len2 = dot(ab, ab);
  g.xa = x - a;
  g.xb = x - b;
  g.t = len2 > T(0) ? hg_clamp(dot(g.xa, ab) / len2, T(0), T(1)) : T(0);  // zero-length bone: a
  g.xq = g.xa - ab * g.t;
  const T d2 = dot(g.xq, g.xq), r = pr.reach();
  // Written so that a NaN distance (overflowing coordinates) gives m = 0.
  g.m = d2 < r * r ? (pr.profile == kHard ? T(1) : exp(-d2 / (T(2) * pr.sigma * pr.sigma))) : T(0);
  g.ra = norm(g.xa);
  g.rb = norm(g.xb);
  const T s = g.ra + g.rb;
  g.wa = s > T(0) ? g.rb / s : T(0.5);
  g.wb = s > T(0) ? g.ra / s : T(0.5);
  return g;
}

// Forward, one task per (batch, bone, pixel row, tile of kTile columns): writes the tile of all
// C channels of the bone's plane, zeros outside the box, so every output element is written
// exactly once. Weights of the tile first, then one contiguous run per channel: the CPU takes
// 32-pixel tiles (vectorized runs), CUDA single pixels (a warp's stores are contiguous).
template <typename T, int64_t kTile>
struct ForwardTile {
  Problem<T> pr;
  T* out;  // [B, P*C, H, W]

  HG_HOST_DEVICE static int64_t tiles(int64_t W) { return (W + kTile - 1) / kTile; }

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t n_tiles = tiles(pr.W), j0 = (task % n_tiles) * kTile, row = task / n_tiles;
    const int64_t i = row % pr.H, bp = row / pr.H, p = bp % pr.P, b = bp / pr.P;
    const int64_t ja = pr.bones[2 * p], jb = pr.bones[2 * p + 1], HW = pr.H * pr.W;
    const Vec2<T> a = pr.joint_px(b, ja), bb = pr.joint_px(b, jb);
    const PixelBox box = bone_box(pr, a, bb);
    const int64_t n = hg_min(kTile, pr.W - j0);
    T ma[kTile], mb[kTile];  // m w_a, m w_b of the tile's pixels
    bool lit[kTile];         // m > 0: pixels outside the mask are 0 whatever the features (NaN too)
    for (int64_t t = 0; t < n; ++t) {
      const int64_t j = j0 + t;
      ma[t] = mb[t] = T(0);
      lit[t] = false;
      if (i >= box.i0 && i < box.i1 && j >= box.j0 && j < box.j1) {
        const PixelGeometry<T> g = pixel_geometry(pr, Vec2<T>{T(j) + T(0.5), T(i) + T(0.5)}, a, bb);
        if (g.m > T(0)) {
          ma[t] = g.m * g.wa;
          mb[t] = g.m * g.wb;
          lit[t] = true;
        }
      }
    }
    const T* fa = pr.joint_feat(b, ja);
    const T* fb = pr.joint_feat(b, jb);
    T* dst = out + bp * pr.C * HW + i * pr.W + j0;
    for (int64_t c = 0; c < pr.C; ++c, dst += HW) {
      const T fac = fa[c], fbc = fb[c];
      for (int64_t t = 0; t < n; ++t) dst[t] = lit[t] ? ma[t] * fac + mb[t] * fbc : T(0);
    }
  }
};

// The joint-position gradient of one lit pixel, added to grad_a and grad_b (pixels): sa, sb are
// dL/d(m w_a) and dL/d(m w_b) at the pixel (for the projection, sum_c g_c f_a[c] and sum_c g_c
// f_b[c]; for bone_plane_conv, the tap sums of plane_conv_kernels.h).
template <typename T>
HG_HOST_DEVICE void add_geometry_grad(const Problem<T>& pr, const PixelGeometry<T>& g, T sa, T sb,
                                      Vec2<T>& grad_a, Vec2<T>& grad_b) {
  // Through the weights: dL/dw_a = m sa, dL/dw_b = m sb, and w depends on |x-a|, |x-b|.
  const T s = g.ra + g.rb;
  if (s > T(0)) {
    const T dra = g.rb / (s * s) * g.m * (sb - sa), drb = g.ra / (s * s) * g.m * (sa - sb);
    if (g.ra > T(0)) grad_a += g.xa * (-dra / g.ra);
    if (g.rb > T(0)) grad_b += g.xb * (-drb / g.rb);
  }
  // Through the Gaussian mask: d(d^2)/da = -2 (1-t) (x-q), d(d^2)/db = -2 t (x-q).
  if (pr.profile == kGaussian) {
    const T coef = (g.wa * sa + g.wb * sb) * g.m / (pr.sigma * pr.sigma);
    grad_a += g.xq * (coef * (T(1) - g.t));
    grad_b += g.xq * (coef * g.t);
  }
}

// Backward, one task per (batch, bone, chunk of channels): sums over the lit pixels
//   feat_partial[b,p,0,c] = sum m w_a g_c,  feat_partial[b,p,1,c] = sum m w_b g_c
//   geom_partial[b,p,k,:] = dL/d(a_x, a_y, b_x, b_y) in pixels, from channels of chunk k.
// The incoming gradient is read through its strides (expanded, sliced or transposed gradients
// are never copied), and only inside the bone's box: per box row, a tile of kTile columns has
// its geometry computed once, then each channel reads the tile's lit span (one contiguous run
// when the gradient's columns are). Chunks bound the work per task: the CPU takes 64 channels
// and 32-column tiles, CUDA 8 channels and single pixels (more threads).
template <typename T, int64_t kTile>
struct BackwardBone {
  Problem<T> pr;
  const T* grad_out;  // [B, P*C, H, W] with strides (sB, sC, sH, sW)
  int64_t sB, sC, sH, sW;
  T* feat_partial;  // [B, P, 2, C], zero-initialized
  T* geom_partial;  // [B, P, n_chunks, 4]
  int64_t chunk, n_chunks;

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t k = task % n_chunks, bp = task / n_chunks, p = bp % pr.P, b = bp / pr.P;
    const int64_t c0 = k * chunk, c1 = hg_min(c0 + chunk, pr.C);
    const int64_t ja = pr.bones[2 * p], jb = pr.bones[2 * p + 1];
    const Vec2<T> a = pr.joint_px(b, ja), bb = pr.joint_px(b, jb);
    const T* fa = pr.joint_feat(b, ja);
    const T* fb = pr.joint_feat(b, jb);
    const T* g_plane = grad_out + b * sB + p * pr.C * sC;
    T* da = feat_partial + bp * 2 * pr.C;
    T* db = da + pr.C;
    Vec2<T> grad_a{T(0), T(0)}, grad_b{T(0), T(0)};
    const PixelBox box = bone_box(pr, a, bb);
    for (int64_t i = box.i0; i < box.i1; ++i) {
      for (int64_t j0 = box.j0; j0 < box.j1; j0 += kTile) {
        const int64_t n = hg_min(kTile, box.j1 - j0);
        PixelGeometry<T> g[kTile];
        T ma[kTile], mb[kTile], sa[kTile], sb[kTile];
        int64_t t0 = n, t1 = 0;  // the lit span [t0, t1) of the tile
        for (int64_t t = 0; t < n; ++t) {
          g[t] = pixel_geometry(pr, Vec2<T>{T(j0 + t) + T(0.5), T(i) + T(0.5)}, a, bb);
          const bool lit = g[t].m > T(0);
          ma[t] = lit ? g[t].m * g[t].wa : T(0);
          mb[t] = lit ? g[t].m * g[t].wb : T(0);
          sa[t] = sb[t] = T(0);
          if (lit) {
            t0 = hg_min(t0, t);
            t1 = t + 1;
          }
        }
        if (t0 >= t1) continue;
        const T* g_row = g_plane + i * sH + j0 * sW;
        for (int64_t c = c0; c < c1; ++c) {
          const T* gc = g_row + c * sC;
          const T fac = fa[c], fbc = fb[c];
          T dac = T(0), dbc = T(0);
          for (int64_t t = t0; t < t1; ++t) {
            // an unlit pixel inside the span (rounding at the mask's edge) contributes nothing,
            // whatever the gradient holds there
            const T go = g[t].m > T(0) ? gc[t * sW] : T(0);
            dac += ma[t] * go;
            dbc += mb[t] * go;
            sa[t] += go * fac;
            sb[t] += go * fbc;
          }
          da[c] += dac;
          db[c] += dbc;
        }
        for (int64_t t = t0; t < t1; ++t)
          if (g[t].m > T(0)) add_geometry_grad(pr, g[t], sa[t], sb[t], grad_a, grad_b);
      }
    }
    T* geom = geom_partial + (bp * n_chunks + k) * 4;
    geom[0] = grad_a.x;
    geom[1] = grad_a.y;
    geom[2] = grad_b.x;
    geom[3] = grad_b.y;
  }
};

// Gathers the per-bone partial sums into per-joint gradients, one task per (batch, joint, k):
// k < C gives grad_feat[b,j,k], k = C, C+1 give grad_uv[b,j,k-C]. A deterministic gather.
template <typename T>
struct GatherJoints {
  Problem<T> pr;
  const T* feat_partial;
  const T* geom_partial;
  int64_t n_chunks;
  T* grad_uv;    // [B, J, 2]
  T* grad_feat;  // [B, J, C]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t k = task % (pr.C + 2), bj = task / (pr.C + 2), j = bj % pr.J, b = bj / pr.J;
    T acc = T(0);
    for (int64_t p = 0; p < pr.P; ++p) {
      for (int64_t side = 0; side < 2; ++side) {
        if (pr.bones[2 * p + side] != j) continue;
        const int64_t bp = b * pr.P + p;
        if (k < pr.C) {
          acc += feat_partial[(bp * 2 + side) * pr.C + k];
        } else {
          for (int64_t q = 0; q < n_chunks; ++q)
            acc += geom_partial[(bp * n_chunks + q) * 4 + side * 2 + (k - pr.C)];
        }
      }
    }
    if (k < pr.C) {
      grad_feat[bj * pr.C + k] = acc;
    } else {
      // pixel x = (u + 1) W / 2, y = (v + 1) H / 2
      grad_uv[bj * 2 + (k - pr.C)] = acc * T(0.5) * T(k == pr.C ? pr.W : pr.H);
    }
  }
};

}  // namespace handgeom::projection
