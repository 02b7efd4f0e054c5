// Kernel bodies of the mesh queries, shared by the CPU and CUDA launchers: a batched BVH (one per
// mesh) and the queries that traverse it (inside test, first ray hit, signed distance,
// penetration) with their backward passes.
//
// BVH layout: a complete binary tree with L = 2^d leaves in heap order (children of node n are 2n+1
// and 2n+2) over a mesh's faces in "slot" order, every node splitting its slot range in half
// (the build orders each range by a median split along its widest centroid axis), so ranges are
// implicit:
//   node n at depth k = floor(log2(n+1)), index i = n + 1 - 2^k, covers slots [i F / 2^k, (i+1) F / 2^k).
// Stored per mesh: the triangles in slot order (contiguous for the leaves), the node boxes, and
// the original face index of each slot. Refitting for moved vertices keeps the order.
#pragma once

#include <limits>

#include "common/device.h"
#include "common/vec.h"
#include "mesh/geometry.h"

namespace handgeom::mesh {

constexpr int64_t kLeafSize = 4;  // faces per leaf, at most
constexpr int kStackSize = 64;    // > tree depth + 1 for any F < 2^60
constexpr int kMaxRays = 9;

// Generic fixed ray directions (none parallel to an axis or a coordinate plane), for the inside
// test and its majority vote.
template <typename T>
HG_HOST_DEVICE Vec3<T> ray_direction(int i) {
  switch (i) {
    case 0: return {T(0.5773502691896258), T(0.6285393610547089), T(0.5211288128307138)};
    case 1: return {T(-0.6285393610547089), T(0.5211288128307138), T(0.5773502691896258)};
    case 2: return {T(0.5211288128307138), T(-0.5773502691896258), T(0.6285393610547089)};
    case 3: return {T(-0.5773502691896258), T(-0.5211288128307138), T(-0.6285393610547089)};
    case 4: return {T(0.6285393610547089), T(-0.5211288128307138), T(-0.5773502691896258)};
    case 5: return {T(-0.5211288128307138), T(0.6285393610547089), T(-0.5773502691896258)};
    case 6: return {T(0.8164965809277260), T(0.3333333333333333), T(-0.4714045207910317)};
    case 7: return {T(-0.3333333333333333), T(-0.8164965809277260), T(0.4714045207910317)};
    default: return {T(0.4714045207910317), T(-0.3333333333333333), T(0.8164965809277260)};
  }
}

// Faces as given: verts [B, V, 3], faces [Bf, F, 3] int32 with Bf = 1 (shared) or B.
template <typename T>
struct Meshes {
  const T* verts;
  const int32_t* faces;
  int64_t V, F, faces_stride;  // faces_stride = 0 when shared

  HG_HOST_DEVICE const int32_t* face(int64_t b, int64_t f) const { return faces + b * faces_stride + f * 3; }
  HG_HOST_DEVICE Vec3<T> vertex(int64_t b, int32_t v) const { return Vec3<T>::load(verts + (b * V + v) * 3); }
};

template <typename T>
struct Bvh {
  const T* tris;         // [B, F, 9] triangle vertices in slot order
  const T* boxes;        // [B, 2L - 1, 6] (min xyz, max xyz)
  const int32_t* order;  // [B, F] face index of each slot
  int64_t F, leaves;

  HG_HOST_DEVICE int64_t nodes() const { return 2 * leaves - 1; }
  HG_HOST_DEVICE bool is_leaf(int64_t node) const { return node >= leaves - 1; }
  HG_HOST_DEVICE void range(int64_t node, int64_t& lo, int64_t& hi) const {
    const int depth = floor_log2(uint64_t(node + 1));
    const int64_t i = node + 1 - (int64_t(1) << depth);
    lo = (i * F) >> depth;
    hi = ((i + 1) * F) >> depth;
  }
  HG_HOST_DEVICE const T* box(int64_t b, int64_t node) const { return boxes + (b * nodes() + node) * 6; }
  // f(slot, a, b, c) for each triangle in a node's slot range.
  template <typename Fn>
  HG_HOST_DEVICE void for_each_triangle(int64_t b, int64_t node, Fn&& f) const {
    int64_t lo, hi;
    range(node, lo, hi);
    for (int64_t s = lo; s < hi; ++s) {
      const T* t = tris + (b * F + s) * 9;
      f(s, Vec3<T>::load(t), Vec3<T>::load(t + 3), Vec3<T>::load(t + 6));
    }
  }
};

// ---- build --------------------------------------------------------------------------------------

// Face centroids, one task per (mesh, face); the build orders faces by them.
template <typename T>
struct Centroids {
  Meshes<T> m;
  T* centroids;  // [B, F, 3]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / m.F, f = task % m.F;
    const int32_t* idx = m.face(b, f);
    ((m.vertex(b, idx[0]) + m.vertex(b, idx[1]) + m.vertex(b, idx[2])) * (T(1) / T(3))).store(centroids + task * 3);
  }
};

// One level of the top-down build, one task per (mesh, node at `depth`): splits the node's slot
// range at its (implicit) midpoint so that the faces of the left half have the smaller centroids
// along the axis where the range's centroids spread most (a median split, by quickselect).
template <typename T>
struct SplitNodes {
  const T* centroids;  // [B, F, 3]
  int32_t* order;      // [B, F], permuted in place within each node's range
  int64_t F;
  int depth;

  HG_HOST_DEVICE T key(int64_t b, int32_t face, int axis) const { return centroids[(b * F + face) * 3 + axis]; }

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t width = int64_t(1) << depth, b = task / width, i = task % width;
    int64_t lo = (i * F) >> depth, hi = ((i + 1) * F) >> depth;
    const int64_t mid = ((2 * i + 1) * F) >> (depth + 1);
    if (hi - lo < 2) return;
    int32_t* ord = order + b * F;
    const T inf = std::numeric_limits<T>::infinity();
    Vec3<T> cmin{inf, inf, inf}, cmax{-inf, -inf, -inf};
    for (int64_t s = lo; s < hi; ++s) {
      const Vec3<T> c = Vec3<T>::load(centroids + (b * F + ord[s]) * 3);
      cmin = vmin(cmin, c);
      cmax = vmax(cmax, c);
    }
    const Vec3<T> ext = cmax - cmin;
    const int axis = ext.x >= ext.y && ext.x >= ext.z ? 0 : ext.y >= ext.z ? 1 : 2;
    // quickselect: ord[lo:mid] <= ord[mid:hi] by key, ties broken by face index (deterministic)
    auto less = [&](int32_t f, int32_t g) {
      const T kf = key(b, f, axis), kg = key(b, g, axis);
      return kf < kg || (kf == kg && f < g);
    };
    while (hi - lo > 1) {
      const int32_t pivot = ord[lo + (hi - lo) / 2];
      int64_t l = lo, r = hi - 1;
      while (l <= r) {
        while (less(ord[l], pivot)) ++l;
        while (less(pivot, ord[r])) --r;
        if (l <= r) {
          const int32_t tmp = ord[l];
          ord[l++] = ord[r];
          ord[r--] = tmp;
        }
      }
      if (mid <= r) hi = r + 1;
      else if (mid >= l) lo = l;
      else break;
    }
  }
};

// Triangles in slot order, one task per (mesh, slot).
template <typename T>
struct GatherTriangles {
  Meshes<T> m;
  const int32_t* order;
  T* tris;

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / m.F;
    const int32_t* idx = m.face(b, order[task]);
    for (int k = 0; k < 3; ++k) m.vertex(b, idx[k]).store(tris + task * 9 + 3 * k);
  }
};

// Box of every node over its slot range, one task per (mesh, node); empty ranges get an empty box.
template <typename T>
struct NodeBoxes {
  Bvh<T> bvh;
  T* boxes;

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / bvh.nodes(), node = task % bvh.nodes();
    const T inf = std::numeric_limits<T>::infinity();
    Vec3<T> bmin{inf, inf, inf}, bmax{-inf, -inf, -inf};
    bvh.for_each_triangle(b, node, [&](int64_t, Vec3<T> a, Vec3<T> p, Vec3<T> c) {
      bmin = vmin(vmin(bmin, a), vmin(p, c));
      bmax = vmax(vmax(bmax, a), vmax(p, c));
    });
    bmin.store(boxes + task * 6);
    bmax.store(boxes + task * 6 + 3);
  }
};

// ---- traversal ----------------------------------------------------------------------------------

// Calls visit(slot, hit) for every triangle of mesh b that the ray hits at 0 < t (all crossings:
// the winding number; first hits have their own front-to-back traversal, first_hit).
template <typename T, typename Visit>
HG_HOST_DEVICE void trace(const Bvh<T>& bvh, int64_t b, const Ray<T>& ray, Visit&& visit) {
  int64_t stack[kStackSize];
  int top = 0;
  stack[top++] = 0;
  while (top > 0) {
    const int64_t node = stack[--top];
    if (!ray_box(ray, bvh.box(b, node), T(0), std::numeric_limits<T>::infinity())) continue;
    if (bvh.is_leaf(node)) {
      bvh.for_each_triangle(b, node, [&](int64_t s, Vec3<T> a, Vec3<T> p, Vec3<T> c) {
        RayHit<T> hit;
        if (intersect(ray, a, p, c, hit)) visit(s, hit);
      });
    } else {
      stack[top++] = 2 * node + 2;
      stack[top++] = 2 * node + 1;
    }
  }
}

// Signed crossing count of a ray with mesh b: the winding number of the ray's origin for a closed
// mesh (0 outside, +-1 inside when consistently oriented). Also the nearest hit's t (inf: none).
template <typename T>
HG_HOST_DEVICE int winding_along(const Bvh<T>& bvh, int64_t b, const Ray<T>& ray, T& t_first) {
  const T inf = std::numeric_limits<T>::infinity();
  int winding = 0;
  t_first = inf;
  trace(bvh, b, ray, [&](int64_t, const RayHit<T>& hit) {
    winding += hit.orientation;
    t_first = hg_min(t_first, hit.t);
  });
  return winding;
}

// Nearest hit along a ray: slot (-1 for a miss) and the hit; ties go to the lower slot. Front to
// back: of two children the nearer entered is visited first, and a node entered beyond the best
// hit so far is skipped, so most rays stop after the first leaves they meet.
template <typename T>
HG_HOST_DEVICE int64_t first_hit(const Bvh<T>& bvh, int64_t b, const Ray<T>& ray, RayHit<T>& best) {
  int64_t best_slot = -1;
  best.t = std::numeric_limits<T>::infinity();
  int64_t stack[kStackSize];
  T stack_t[kStackSize];
  int top = 0;
  T entry;
  if (ray_box(ray, bvh.box(b, 0), T(0), best.t, &entry)) {
    stack[top] = 0;
    stack_t[top++] = entry;
  }
  while (top > 0) {
    --top;
    const int64_t node = stack[top];
    if (!(stack_t[top] <= best.t * box_slack<T>())) continue;
    if (bvh.is_leaf(node)) {
      bvh.for_each_triangle(b, node, [&](int64_t s, Vec3<T> a, Vec3<T> p, Vec3<T> c) {
        RayHit<T> hit;
        if (intersect(ray, a, p, c, hit) && (hit.t < best.t || (hit.t == best.t && s < best_slot))) {
          best = hit;
          best_slot = s;
        }
      });
      continue;
    }
    T t_left, t_right;
    const bool left = ray_box(ray, bvh.box(b, 2 * node + 1), T(0), best.t, &t_left);
    const bool right = ray_box(ray, bvh.box(b, 2 * node + 2), T(0), best.t, &t_right);
    const bool left_first = left && (!right || t_left <= t_right);
    // push the later child first, so that the nearer one is popped next
    if (left && right) {
      stack[top] = left_first ? 2 * node + 2 : 2 * node + 1;
      stack_t[top++] = left_first ? t_right : t_left;
    }
    if (left || right) {
      stack[top] = left_first ? 2 * node + 1 : 2 * node + 2;
      stack_t[top++] = left_first ? t_left : t_right;
    }
  }
  return best_slot;
}

// Closest point of mesh b to p within sqrt(bound2) (pass inf for no bound): slot (-1 when there
// is none: an empty mesh, a NaN point) and the projection. Depth first, descending into the nearer
// child and deferring the other, skipping boxes beyond the best distance so far.
template <typename T>
HG_HOST_DEVICE int64_t nearest(const Bvh<T>& bvh, int64_t b, Vec3<T> p, T bound2, Closest<T>& best, T& best_d2) {
  int64_t stack[kStackSize];
  T stack_d2[kStackSize];
  int top = 0;
  int64_t best_slot = -1;
  best_d2 = std::numeric_limits<T>::infinity();
  T bound = bound2;
  int64_t node = 0;
  T d2 = box_distance2(p, bvh.box(b, 0));
  while (true) {
    if (!(d2 > bound) && d2 < best_d2) {
      if (bvh.is_leaf(node)) {
        bvh.for_each_triangle(b, node, [&](int64_t s, Vec3<T> a, Vec3<T> q, Vec3<T> c) {
          const Closest<T> cl = closest_on_triangle(p, a, q, c);
          const Vec3<T> e = p - cl.point;
          const T e2 = dot(e, e);
          if (e2 < best_d2) {
            best_d2 = e2;
            best = cl;
            best_slot = s;
          }
        });
        bound = hg_min(bound, best_d2);
      } else {
        // nearer child next (the left one on a tie)
        const int64_t l = 2 * node + 1;
        const T near_l = box_distance2(p, bvh.box(b, l)), near_r = box_distance2(p, bvh.box(b, l + 1));
        const bool right_first = !(near_l <= near_r);
        stack[top] = l + !right_first;
        stack_d2[top++] = right_first ? near_l : near_r;
        node = l + right_first;
        d2 = right_first ? near_r : near_l;
        continue;
      }
    }
    if (top == 0) break;
    --top;
    node = stack[top];
    d2 = stack_d2[top];
  }
  return best_slot;
}

// The ray for an inside test of p: direction `r` of the fixed set, its components' signs turned
// towards the nearer side of the mesh's root box, so the ray leaves the mesh by a short path.
template <typename T>
HG_HOST_DEVICE Ray<T> inside_ray(const Bvh<T>& bvh, int64_t b, Vec3<T> p, int r) {
  const T* root = bvh.box(b, 0);
  const Vec3<T> d = ray_direction<T>(r);
  const T dx = hg_abs(d.x), dy = hg_abs(d.y), dz = hg_abs(d.z);
  return Ray<T>::make(p, {root[3] - p.x < p.x - root[0] ? dx : -dx, root[4] - p.y < p.y - root[1] ? dy : -dy,
                          root[5] - p.z < p.z - root[2] ? dz : -dz});
}

// Inside by ray casting: winding number != 0 along each of n_rays rays, majority vote. t_first:
// distance to the first hit of the first ray, an upper bound on the distance to the surface.
template <typename T>
HG_HOST_DEVICE bool is_inside(const Bvh<T>& bvh, int64_t b, Vec3<T> p, int n_rays, T& t_first) {
  int votes = 0;
  for (int r = 0; r < n_rays; ++r) {
    T t;
    votes += winding_along(bvh, b, inside_ray(bvh, b, p, r), t) != 0;
    if (r == 0) t_first = t;
  }
  return 2 * votes > n_rays;
}

// ---- query order --------------------------------------------------------------------------------

constexpr int kCellBits = 4;  // per axis, of the grid that orders the point queries

// Morton index of p's cell in a grid of 2^kCellBits cells per axis with corner lo and cells of
// size 1 / scale; NaN coordinates go to cell 0 (clamped as floats: no out-of-range conversion).
template <typename T>
HG_HOST_DEVICE int cell_of(Vec3<T> p, Vec3<T> lo, Vec3<T> scale) {
  constexpr int kSide = 1 << kCellBits;
  int code = 0;
  for (int k = 0; k < 3; ++k) {
    const int c = int(hg_clamp((p[k] - lo[k]) * scale[k], T(0), T(kSide - 1)));
    for (int j = 0; j < kCellBits; ++j) code |= ((c >> j) & 1) << (3 * j + k);
  }
  return code;
}

// The order in which to run a mesh's closest-point queries: by Morton cell in the points' bounding
// box (a stable counting sort), one task per mesh. Successive queries then traverse nearly the
// same nodes: on the CPU, 15-40% less time on random points (fewer mispredicted branches). The
// inside test gains too little to pay for it on a single large mesh (one task). On a GPU only B
// threads run this.
template <typename T>
struct CoherentOrder {
  const T* points;  // [B, N, 3]
  int64_t N;
  int64_t* perm;  // [B, N]: the point index each query task of mesh b handles

  HG_HOST_DEVICE void operator()(int64_t b) const {
    constexpr int kCells = 1 << (3 * kCellBits);
    const T* pts = points + b * N * 3;
    const T inf = std::numeric_limits<T>::infinity();
    Vec3<T> lo{inf, inf, inf}, hi{-inf, -inf, -inf};
    for (int64_t i = 0; i < N; ++i) {  // p first: NaN coordinates are skipped
      lo = vmin(Vec3<T>::load(pts + i * 3), lo);
      hi = vmax(Vec3<T>::load(pts + i * 3), hi);
    }
    const T side = T(1 << kCellBits);
    const Vec3<T> scale{side / (hi.x - lo.x), side / (hi.y - lo.y), side / (hi.z - lo.z)};
    int64_t start[kCells + 1] = {};
    for (int64_t i = 0; i < N; ++i) ++start[cell_of(Vec3<T>::load(pts + i * 3), lo, scale) + 1];
    for (int c = 0; c < kCells; ++c) start[c + 1] += start[c];
    for (int64_t i = 0; i < N; ++i) perm[b * N + start[cell_of(Vec3<T>::load(pts + i * 3), lo, scale)]++] = i;
  }
};

// ---- queries ------------------------------------------------------------------------------------

// The inside test's first hit lies on the surface at distance t_first (unit ray directions): a
// bound for the closest-point search, with slack for the two computations' rounding.
template <typename T>
HG_HOST_DEVICE T search_bound(T t_first) {
  const T t = t_first * T(1.001);
  return t * t;
}

template <typename T>
struct InsideQuery {
  Bvh<T> bvh;
  const T* points;  // [B, N, 3]
  int64_t N;
  int n_rays;
  bool* inside;  // [B, N]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    T t_first;
    inside[task] = is_inside(bvh, task / N, Vec3<T>::load(points + task * 3), n_rays, t_first);
  }
};

template <typename T>
struct RayQuery {
  Bvh<T> bvh;
  const T* origins;  // [B, R, 3]
  const T* dirs;     // [B, R, 3]
  int64_t R;
  T* t;           // [B, R], inf for a miss
  int64_t* face;  // [B, R], -1 for a miss
  T* bary;        // [B, R, 3]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / R;
    RayHit<T> hit;
    const int64_t slot = first_hit(bvh, b, Ray<T>::make(Vec3<T>::load(origins + task * 3), Vec3<T>::load(dirs + task * 3)), hit);
    t[task] = hit.t;
    face[task] = slot < 0 ? -1 : bvh.order[b * bvh.F + slot];
    const Vec3<T> w = slot < 0 ? Vec3<T>{T(0), T(0), T(0)} : Vec3<T>{hit.u, hit.v, hit.w};
    w.store(bary + task * 3);
  }
};

// Signed distance (negative inside, sign from the one-ray inside test), closest face and point.
template <typename T>
struct DistanceQuery {
  Bvh<T> bvh;
  const T* points;  // [B, N, 3]
  int64_t N;
  const int64_t* perm;  // [B, N], CoherentOrder
  T* sdf;               // [B, N]; +inf for an empty mesh, NaN for a NaN point
  int64_t* face;        // [B, N]; -1 when there is no closest face
  T* closest;           // [B, N, 3]

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / N, i = b * N + perm[task];
    const Vec3<T> p = Vec3<T>::load(points + i * 3);
    T t_first;
    const bool in = is_inside(bvh, b, p, 1, t_first);
    Closest<T> cl;
    T d2;
    const int64_t slot = nearest(bvh, b, p, search_bound(t_first), cl, d2);
    if (slot < 0) {
      const T nan = std::numeric_limits<T>::quiet_NaN();
      sdf[i] = p.x == p.x && p.y == p.y && p.z == p.z ? std::numeric_limits<T>::infinity() : nan;
      face[i] = -1;
      Vec3<T>{nan, nan, nan}.store(closest + i * 3);
      return;
    }
    const T d = sqrt(d2);
    sdf[i] = in ? -d : d;
    face[i] = bvh.order[b * bvh.F + slot];
    cl.point.store(closest + i * 3);
  }
};

// Penetration depth max(-sdf, 0) (or its square): the inside test first, the closest-point search
// only for points inside.
template <typename T>
struct PenetrationQuery {
  Bvh<T> bvh;
  const T* points;
  int64_t N;
  const int64_t* perm;  // [B, N], CoherentOrder
  bool squared;
  T* loss;              // [B, N]
  int64_t* face;        // [B, N]; -1 for points outside

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / N, i = b * N + perm[task];
    const Vec3<T> p = Vec3<T>::load(points + i * 3);
    loss[i] = p.x == p.x && p.y == p.y && p.z == p.z ? T(0) : std::numeric_limits<T>::quiet_NaN();
    face[i] = -1;
    T t_first;
    if (!is_inside(bvh, b, p, 1, t_first)) return;
    Closest<T> cl;
    T d2;
    const int64_t slot = nearest(bvh, b, p, search_bound(t_first), cl, d2);
    if (slot < 0) return;
    loss[i] = squared ? d2 : sqrt(d2);
    face[i] = bvh.order[b * bvh.F + slot];
  }
};

// Backward of a function of the distance d(p, face) for one point: the distance's gradient is
// n = (p - q) / d for p and -w_i n for vertex i of the closest face (q and the barycentric w are
// those of the closest point; a.e. exact, no gradient through the choice of face). `coef[task]`
// holds dL/dd for each point (0 or face -1: no contribution). Vertex gradients of one mesh are
// accumulated with shared_add: run grouped by mesh.
template <typename T>
struct DistanceBackward {
  Meshes<T> m;
  const T* points;       // [B, N, 3]
  const int64_t* face;   // [B, N]
  const T* coef;         // [B, N]
  int64_t N;
  T* grad_points;  // [B, N, 3]
  T* grad_verts;   // [B, V, 3], zero-initialized

  HG_HOST_DEVICE void operator()(int64_t task) const {
    const int64_t b = task / N, f = face[task];
    Vec3<T> gp{T(0), T(0), T(0)};
    if (f >= 0 && coef[task] != T(0)) {
      const int32_t* idx = m.face(b, f);
      const Vec3<T> p = Vec3<T>::load(points + task * 3);
      const Closest<T> cl = closest_on_triangle(p, m.vertex(b, idx[0]), m.vertex(b, idx[1]), m.vertex(b, idx[2]));
      const Vec3<T> e = p - cl.point;
      const T d = sqrt(dot(e, e));
      if (d > T(0)) {
        gp = e * (coef[task] / d);
        const T w[3] = {cl.u, cl.v, cl.w};
        for (int k = 0; k < 3; ++k) {
          T* g = grad_verts + (b * m.V + idx[k]) * 3;
          shared_add(g, -w[k] * gp.x);
          shared_add(g + 1, -w[k] * gp.y);
          shared_add(g + 2, -w[k] * gp.z);
        }
      }
    }
    gp.store(grad_points + task * 3);
  }
};

}  // namespace handgeom::mesh
