// Exact geometric predicates and projections for triangle meshes, shared by every mesh query:
// the watertight ray/triangle test with a consistent fill rule, closest point on a triangle, and
// ray/box and point/box tests for BVH traversal.
#pragma once

#include <limits>

#include "common/device.h"
#include "common/vec.h"

namespace handgeom::mesh {

// a*b, never fused with a following add: x*y - z*w must be exactly antisymmetric under swapping
// the two products, which is what makes the ray/triangle test watertight. (Host code is built
// with -ffp-contract=off; device code uses the round-to-nearest intrinsics nvcc never fuses.)
template <typename T>
HG_HOST_DEVICE T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// A ray with the shear/permutation of Woop, Benthin & Wald (2013), "Watertight Ray/Triangle
// Intersection", JCGT 2(1): kz is the dominant axis of the direction; vertices are translated to
// the origin and sheared so the ray becomes +z.
template <typename T>
struct Ray {
  Vec3<T> org, dir, inv;  // inv = 1 / dir, for the box tests
  int kx, ky, kz;
  T sx, sy, sz;

  HG_HOST_DEVICE static Ray make(Vec3<T> org, Vec3<T> dir) {
    Ray r{org, dir, {T(1) / dir.x, T(1) / dir.y, T(1) / dir.z}, 0, 0, 0, T(0), T(0), T(0)};
    const T ax = hg_abs(dir.x), ay = hg_abs(dir.y), az = hg_abs(dir.z);
    r.kz = ax > ay ? (ax > az ? 0 : 2) : (ay > az ? 1 : 2);
    r.kx = (r.kz + 1) % 3;
    r.ky = (r.kx + 1) % 3;
    if (dir[r.kz] < T(0)) {  // keep the winding of the projected triangles
      const int k = r.kx;
      r.kx = r.ky;
      r.ky = k;
    }
    r.sx = dir[r.kx] / dir[r.kz];
    r.sy = dir[r.ky] / dir[r.kz];
    r.sz = T(1) / dir[r.kz];
    return r;
  }
};

// Fill rule for points exactly on a projected edge: an edge owns them when its (orientation-
// normalized) direction points "up", or exactly left. Of the two triangles sharing an edge, which
// traverse it in opposite directions, exactly one owns it; at shared vertices the same holds for
// the fan around the vertex. This equals moving the ray by an infinitesimal fixed offset, so a
// closed mesh's crossing count is exact even for rays through vertices and edges.
template <typename T>
HG_HOST_DEVICE bool owns_edge(T dx, T dy) {
  return dy > T(0) || (dy == T(0) && dx < T(0));
}

template <typename T>
struct RayHit {
  T t;              // ray parameter of the hit (dir need not be unit length)
  T u, v, w;        // barycentric weights of the triangle's vertices a, b, c
  int orientation;  // sign of the projected determinant: which side of the triangle the ray enters
};

// Watertight ray/triangle intersection. Returns false on a miss, for hits at t <= 0 and for
// triangles edge-on to the ray (including degenerate ones). `orientation` is the sign of the
// projected determinant: summed over all hits, it counts signed crossings (a winding number).
template <typename T>
HG_HOST_DEVICE bool intersect(const Ray<T>& r, Vec3<T> a, Vec3<T> b, Vec3<T> c, RayHit<T>& hit) {
  const Vec3<T> A = a - r.org, B = b - r.org, C = c - r.org;
  const T ax = A[r.kx] - r.sx * A[r.kz], ay = A[r.ky] - r.sy * A[r.kz];
  const T bx = B[r.kx] - r.sx * B[r.kz], by = B[r.ky] - r.sy * B[r.kz];
  const T cx = C[r.kx] - r.sx * C[r.kz], cy = C[r.ky] - r.sy * C[r.kz];
  const T U = mul_rn(cx, by) - mul_rn(cy, bx);  // edge bc, weight of a
  const T V = mul_rn(ax, cy) - mul_rn(ay, cx);  // edge ca, weight of b
  const T W = mul_rn(bx, ay) - mul_rn(by, ax);  // edge ab, weight of c
  const T det = U + V + W;
  if (det == T(0) || det != det) return false;
  const T s = det > T(0) ? T(1) : T(-1);
  auto inside = [s](T e, T dx, T dy) { return e * s > T(0) || (e == T(0) && owns_edge(s * dx, s * dy)); };
  if (!inside(U, cx - bx, cy - by) || !inside(V, ax - cx, ay - cy) || !inside(W, bx - ax, by - ay)) return false;
  const T tz = U * (r.sz * A[r.kz]) + V * (r.sz * B[r.kz]) + W * (r.sz * C[r.kz]);
  if (!(tz * s > T(0))) return false;  // behind or at the origin
  const T inv = T(1) / det;
  hit = {tz * inv, U * inv, V * inv, W * inv, det > T(0) ? 1 : -1};
  return true;
}

// Relative slack of the box tests: a few ulps (see ray_box).
template <typename T>
HG_HOST_DEVICE constexpr T box_slack() { return T(1) + T(4) * std::numeric_limits<T>::epsilon(); }

// Whether a ray meets an axis-aligned box within [t0, t1]. The interval's far end is widened by a
// few ulps (Ize 2013, "Robust BVH Ray Traversal"), so rounding never culls a box whose boundary
// the ray touches at a triangle's vertex or edge. NaN rays meet nothing.
template <typename T>
HG_HOST_DEVICE bool ray_box(const Ray<T>& r, const T* box, T t0, T t1, T* entry = nullptr) {
  for (int k = 0; k < 3; ++k) {
    const T o = r.org[k], lo = box[k], hi = box[3 + k];
    if (r.dir[k] == T(0)) {
      if (!(o >= lo && o <= hi)) return false;
      continue;
    }
    const T ta = (lo - o) * r.inv[k], tb = (hi - o) * r.inv[k];
    t0 = hg_max(t0, hg_min(ta, tb));
    t1 = hg_min(t1, hg_max(ta, tb));
  }
  if (entry != nullptr) *entry = t0;  // where the ray enters the box, clipped to t0 (written on a miss too)
  return t0 <= t1 * box_slack<T>();
}

// Squared distance from p to a box (0 inside), via the clamped point: min/max instructions, where
// max(e, 0) per axis compiled to an unpredictable branch (a quarter of the nearest search's time).
template <typename T>
HG_HOST_DEVICE T box_distance2(Vec3<T> p, const T* box) {
  T d2 = T(0);
  for (int k = 0; k < 3; ++k) {
    const T e = hg_clamp(p[k], box[k], box[3 + k]) - p[k];
    d2 += e * e;
  }
  return d2;
}

template <typename T>
struct Closest {
  Vec3<T> point;
  T u, v, w;  // barycentric weights of a, b, c
};

template <typename T>
HG_HOST_DEVICE T safe_ratio(T num, T den) { return den > T(0) ? num / den : T(0); }

// Closest point to p on segment ab, as weights (1 - t, t).
template <typename T>
HG_HOST_DEVICE T segment_parameter(Vec3<T> p, Vec3<T> a, Vec3<T> b) {
  const Vec3<T> ab = b - a;
  return hg_clamp(safe_ratio(dot(p - a, ab), dot(ab, ab)), T(0), T(1));
}

// Closest point on triangle abc by Voronoi regions (Ericson, Real-Time Collision Detection,
// 5.1.5); exact on faces, edges and vertices at any scale (no absolute thresholds). A degenerate
// (zero-area) triangle falls back to the closest of its three edges.
template <typename T>
HG_HOST_DEVICE Closest<T> closest_on_triangle(Vec3<T> p, Vec3<T> a, Vec3<T> b, Vec3<T> c) {
  const Vec3<T> ab = b - a, ac = c - a, ap = p - a;
  const T d1 = dot(ab, ap), d2 = dot(ac, ap);
  if (d1 <= T(0) && d2 <= T(0)) return {a, T(1), T(0), T(0)};
  const Vec3<T> bp = p - b;
  const T d3 = dot(ab, bp), d4 = dot(ac, bp);
  if (d3 >= T(0) && d4 <= d3) return {b, T(0), T(1), T(0)};
  const T vc = d1 * d4 - d3 * d2;
  if (vc <= T(0) && d1 >= T(0) && d3 <= T(0)) {
    const T t = safe_ratio(d1, d1 - d3);
    return {a + ab * t, T(1) - t, t, T(0)};
  }
  const Vec3<T> cp = p - c;
  const T d5 = dot(ab, cp), d6 = dot(ac, cp);
  if (d6 >= T(0) && d5 <= d6) return {c, T(0), T(0), T(1)};
  const T vb = d5 * d2 - d1 * d6;
  if (vb <= T(0) && d2 >= T(0) && d6 <= T(0)) {
    const T t = safe_ratio(d2, d2 - d6);
    return {a + ac * t, T(1) - t, T(0), t};
  }
  const T va = d3 * d6 - d5 * d4;
  if (va <= T(0) && d4 - d3 >= T(0) && d5 - d6 >= T(0)) {
    const T t = safe_ratio(d4 - d3, (d4 - d3) + (d5 - d6));
    return {b + (c - b) * t, T(0), T(1) - t, t};
  }
  const T sum = va + vb + vc;
  if (sum > T(0)) {
    const T v = vb / sum, w = vc / sum;
    return {a + ab * v + ac * w, T(1) - v - w, v, w};
  }
  // zero area: the closest of the edges ab, bc, ca
  const T tab = segment_parameter(p, a, b), tbc = segment_parameter(p, b, c), tca = segment_parameter(p, c, a);
  const Vec3<T> qab = a + ab * tab, qbc = b + (c - b) * tbc, qca = c + (a - c) * tca;
  const T dab = dot(p - qab, p - qab), dbc = dot(p - qbc, p - qbc), dca = dot(p - qca, p - qca);
  if (dab <= dbc && dab <= dca) return {qab, T(1) - tab, tab, T(0)};
  if (dbc <= dca) return {qbc, T(0), T(1) - tbc, tbc};
  return {qca, tca, T(0), T(1) - tca};
}

}  // namespace handgeom::mesh
