// Kernel bodies of the conditioned MLP (the occupancy decoder in eval mode), shared by the CPU and
// CUDA launchers. Per point x (D input features), with per-sample modulations s_l, t_l [H]:
//
//   h_0     = W_in x + b_in
//   a       = W_2k   relu(s_2k   * h_k + t_2k)   + b_2k          for each residual block k < L/2
//   h_{k+1} = h_k + W_2k+1 relu(s_2k+1 * a + t_2k+1) + b_2k+1
//   logit   = w_out . relu(h_{L/2}) + b_out
//
// A task evaluates a tile of TILE points with every activation in a local [H][TILE] array (the
// point index is the fast one, so the CPU vectorizes over points and reads each weight once per
// tile); nothing per layer reaches memory. CPU tiles are 64 points; a CUDA thread is a tile of 1,
// with the weights staged in shared memory by the launcher (see StagedWeights).
#pragma once

#include "common/device.h"

namespace handgeom::occupancy {

constexpr int kMaxInputs = 64;
constexpr int kMaxWidth = 128;
constexpr int kMaxLayers = 8;

// The frozen weights, packed in one array (so a launcher can stage them): w_in [H, D], b_in [H],
// w [L, H, H] (out, in: nn.Linear's layout), b [L, H], w_out [H], b_out [1].
template <typename T>
struct Weights {
  const T* data;
  int D, H, L;

  static HG_HOST_DEVICE int64_t count(int D, int H, int L) { return int64_t(H) * (D + 1) + int64_t(L) * H * (H + 1) + H + 1; }
  HG_HOST_DEVICE const T* w_in() const { return data; }
  HG_HOST_DEVICE const T* b_in() const { return data + H * D; }
  HG_HOST_DEVICE const T* w(int l) const { return data + H * (D + 1) + int64_t(l) * H * H; }
  HG_HOST_DEVICE const T* b(int l) const { return data + H * (D + 1) + int64_t(L) * H * H + l * H; }
  HG_HOST_DEVICE const T* w_out() const { return data + H * (D + 1) + int64_t(L) * H * (H + 1); }
  HG_HOST_DEVICE T b_out() const { return w_out()[H]; }
};

template <typename T>
struct Problem {
  const T* inputs;  // [B, N, D]
  const T* scale;   // [B, L, H]
  const T* shift;   // [B, L, H]
  Weights<T> weights;
  int64_t B, N;

  HG_HOST_DEVICE const T* modulation(const T* m, int64_t b, int l) const {
    return m + (b * weights.L + l) * weights.H;
  }
};

// y[r][t] = bias[r] + add[r][t] + sum_c m[r * rs + c * cs] x[c][t] for r < R, t < TILE
// (x: [C][TILE], y, add: [R][TILE]; bias and add may be null; add may be y). (rs, cs) = (C, 1)
// multiplies by a row-major matrix, (1, R) by its transpose. kRows rows at a time keep kRows x
// TILE accumulators in registers (1 KB: 16 AVX-512 registers) while x streams from L1.
template <int TILE, typename T>
HG_CLONE_OWN void matmul_tile(const T* m, int64_t rs, int64_t cs, int R, int C, const T* x, const T* bias,
                              const T* add, T* y) {
  constexpr int kRows = hg_clamp<int>(1024 / int(TILE * sizeof(T)), 1, 8);
  int r0 = 0;
  for (; r0 + kRows <= R; r0 += kRows) {
    T acc[kRows][TILE];
    for (int r = 0; r < kRows; ++r)
      for (int t = 0; t < TILE; ++t) acc[r][t] = (bias ? bias[r0 + r] : T(0)) + (add ? add[(r0 + r) * TILE + t] : T(0));
    for (int c = 0; c < C; ++c) {
      const T* xc = x + c * TILE;
      for (int r = 0; r < kRows; ++r) {
        const T w = m[(r0 + r) * rs + c * cs];
        for (int t = 0; t < TILE; ++t) acc[r][t] += w * xc[t];
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int t = 0; t < TILE; ++t) y[(r0 + r) * TILE + t] = acc[r][t];
  }
  for (; r0 < R; ++r0) {  // rows left over (input features, D % kRows)
    T acc[TILE];
    for (int t = 0; t < TILE; ++t) acc[t] = (bias ? bias[r0] : T(0)) + (add ? add[r0 * TILE + t] : T(0));
    for (int c = 0; c < C; ++c)
      for (int t = 0; t < TILE; ++t) acc[t] += m[r0 * rs + c * cs] * x[c * TILE + t];
    for (int t = 0; t < TILE; ++t) y[r0 * TILE + t] = acc[t];
  }
}

// max(v, 0) that keeps NaN (as torch.relu), so a NaN input gives a NaN logit.
template <typename T>
HG_HOST_DEVICE T relu(T v) { return v < T(0) ? T(0) : v; }

// u = relu(s * z + t) elementwise over [H][TILE].
template <int TILE, typename T>
HG_CLONE_INLINE void modulate(const T* s, const T* sh, int H, const T* z, T* u) {
  for (int i = 0; i < H; ++i)
    for (int t = 0; t < TILE; ++t) u[i * TILE + t] = relu(s[i] * z[i * TILE + t] + sh[i]);
}

// The activations of one tile, [H][TILE] each: z_l, the input of modulation l (h_k for l = 2k,
// the block's middle a for l = 2k + 1), and z_L = h_{L/2}. The backward pass keeps all L + 1
// (kept = true); the forward pass needs two, since h_{k+1} = h_k + ... overwrites h_k in place.
template <int TILE, typename T>
struct Activations {
  T* data;
  int H;
  bool kept;

  HG_HOST_DEVICE T* z(int l) const { return data + (kept ? l : l % 2) * H * TILE; }
};

// The forward pass of one tile: x [D][TILE] in, every z_l out; u is scratch.
template <int TILE, typename T>
HG_CLONE_INLINE void forward_tile(const Problem<T>& p, int64_t b, const T* x, const Activations<TILE, T>& act, T* u) {
  const Weights<T>& w = p.weights;
  const int H = w.H;
  matmul_tile<TILE>(w.w_in(), w.D, 1, H, w.D, x, w.b_in(), static_cast<const T*>(nullptr), act.z(0));
  for (int l = 0; l < w.L; ++l) {
    modulate<TILE>(p.modulation(p.scale, b, l), p.modulation(p.shift, b, l), H, act.z(l), u);
    const T* skip = l % 2 ? act.z(l - 1) : static_cast<const T*>(nullptr);  // h_k closes the block
    matmul_tile<TILE>(w.w(l), H, 1, H, H, u, w.b(l), skip, act.z(l + 1));
  }
}

// Loads points [p0, p0 + TILE) of sample b as x [D][TILE]; points past N read as zeros.
template <int TILE, typename T>
HG_CLONE_INLINE int load_tile(const Problem<T>& p, int64_t b, int64_t p0, T* x) {
  const int D = p.weights.D;
  const int count = int(hg_min<int64_t>(TILE, p.N - p0));
  const T* in = p.inputs + (b * p.N + p0) * D;
  for (int t = 0; t < count; ++t)
    for (int d = 0; d < D; ++d) x[d * TILE + t] = in[t * D + d];
  for (int t = count; t < TILE; ++t)
    for (int d = 0; d < D; ++d) x[d * TILE + t] = T(0);
  return count;
}

// logit[t] = w_out . relu(h[:, t]) + b_out for h = z_L [H][TILE].
template <int TILE, typename T>
HG_CLONE_INLINE void output_tile(const Weights<T>& w, const T* h, T* logit) {
  for (int t = 0; t < TILE; ++t) logit[t] = w.b_out();
  for (int k = 0; k < w.H; ++k)
    for (int t = 0; t < TILE; ++t) logit[t] += w.w_out()[k] * relu(h[k * TILE + t]);
}

// The occupancy penalty of one point ("Two Hands Are Better Than One"): q = p^2 for the
// probability p = sigmoid(logit), with truncate p^2 [p > 1/2]; returns q and sets dq = dq/dlogit.
template <typename T>
HG_HOST_DEVICE T penalty_term(T logit, bool truncate, T& dq) {
  const T p = T(1) / (T(1) + exp(-logit));
  const bool counted = !truncate || p > T(0.5);
  dq = counted ? T(2) * p * p * (T(1) - p) : T(0);
  return counted ? p * p : T(0);
}

// Names the weights a body reads, so the CUDA launcher stages them in shared memory (Staged in
// common/cuda_launch.cuh). Body has a Problem<T> p.
template <typename Body, typename T>
struct StagedWeights {
  const T* staged() const { return body().p.weights.data; }
  int64_t staged_count() const {
    const Weights<T>& w = body().p.weights;
    return Weights<T>::count(w.D, w.H, w.L);
  }
  HG_HOST_DEVICE Body restaged(const T* weights) const {
    Body copy = body();
    copy.p.weights.data = weights;
    return copy;
  }

 private:
  HG_HOST_DEVICE const Body& body() const { return static_cast<const Body&>(*this); }
};

// Task i: tile i % tiles of sample i / tiles.
template <typename T, int TILE>
struct Forward : StagedWeights<Forward<T, TILE>, T> {
  Problem<T> p;
  T* logits;  // [B, N]

  HG_HOST_DEVICE int64_t tiles() const { return (p.N + TILE - 1) / TILE; }

  HG_CPU_CLONES HG_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t b = i / tiles(), p0 = (i % tiles()) * TILE;
    T x[kMaxInputs * TILE], z[2 * kMaxWidth * TILE], u[kMaxWidth * TILE];
    const Weights<T>& w = p.weights;
    const Activations<TILE, T> act{z, w.H, false};
    const int count = load_tile<TILE>(p, b, p0, x);
    forward_tile<TILE>(p, b, x, act, u);
    T logit[TILE];
    output_tile<TILE>(w, act.z(w.L), logit);
    for (int t = 0; t < count; ++t) logits[b * p.N + p0 + t] = logit[t];
  }
};

// a[0] + ... + a[W - 1] as a tree of W / 2, W / 4, ... lanes: with W a constant each level is
// one vector add (a sequential float sum could not be reordered into vectors).
template <int W, typename T>
HG_CLONE_INLINE T lane_sum(T* a) {
  if constexpr (W > 1) {
    for (int j = 0; j < W / 2; ++j) a[j] += a[j + W / 2];
    return lane_sum<W / 2>(a);
  } else {
    return a[0];
  }
}

// Backward through modulation l, m(z) = relu(s z + t) over [H][TILE], given u = dL/dm: adds
// sum_t dL/d(s z + t) * z and sum_t dL/d(s z + t) to grad_scale[k] and grad_shift[k], and writes
// (or, with accumulate, adds) dL/dz to dz. Sums run in 16 lanes so the point loop vectorizes.
template <int TILE, typename T>
HG_CLONE_INLINE void modulate_backward(const T* s, const T* sh, int H, const T* z, const T* u, T* grad_scale,
                                       T* grad_shift, T* dz, bool accumulate) {
  constexpr int kLanes = TILE < 16 ? TILE : 16;
  static_assert(TILE % kLanes == 0, "tiles are up to 16 points or a multiple of 16");
  for (int k = 0; k < H; ++k) {
    T lane_s[kLanes] = {}, lane_t[kLanes] = {};
    for (int t0 = 0; t0 < TILE; t0 += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const int e = k * TILE + t0 + j;
        const T v = s[k] * z[e] + sh[k] > T(0) ? u[e] : T(0);  // through the ReLU
        lane_s[j] += v * z[e];
        lane_t[j] += v;
        dz[e] = (accumulate ? dz[e] : T(0)) + v * s[k];
      }
    }
    shared_add(grad_scale + k, lane_sum<kLanes>(lane_s));
    shared_add(grad_shift + k, lane_sum<kLanes>(lane_t));
  }
}

// Gradients of a loss L of the logits: grad_inputs [B, N, D] per point, and the modulation
// gradients summed over the points of a slot: grad_mod [B * slots, 2, L, H] (scale, then shift).
// Without penalty, seed [B, N] is dL/dlogit (the backward pass of the logits). With penalty, the
// loss is the weighted occupancy penalty L_b = sum_n seed_n q(logit_n) (penalty_term), computed
// in the same pass: penalty [B * slots] gets each slot's sum, and no forward pass is repeated.
// Task i is tile i % tiles_per_slot of slot i / tiles_per_slot (slot = sample * slots + part);
// the launcher runs a slot's tasks on one CPU task, or adds them atomically on CUDA
// (Launcher::grouped). The tile's forward pass runs here, its activations kept in the task's
// local memory.
template <typename T, int TILE>
struct Backward : StagedWeights<Backward<T, TILE>, T> {
  Problem<T> p;
  const T* seed;
  T* grad_inputs;
  T* grad_mod;
  T* penalty;  // null: seed is dL/dlogit
  bool truncate;
  int64_t slots, tiles_per_slot;

  HG_CPU_CLONES HG_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t slot = i / tiles_per_slot, b = slot / slots;
    const int64_t p0 = ((slot % slots) * tiles_per_slot + i % tiles_per_slot) * TILE;
    if (p0 >= p.N) return;
    const Weights<T>& w = p.weights;
    const int H = w.H, L = w.L;
    T x[kMaxInputs * TILE], z[(kMaxLayers + 1) * kMaxWidth * TILE], u[kMaxWidth * TILE];
    T g[kMaxWidth * TILE], ga[kMaxWidth * TILE];  // dL/dh_k and dL/da of the current block
    const Activations<TILE, T> act{z, H, true};
    const int count = load_tile<TILE>(p, b, p0, x);
    forward_tile<TILE>(p, b, x, act, u);

    // dL/dlogit, then dL/dh_{L/2} through the output ReLU; points past N have zero gradient.
    T gl[TILE];
    for (int t = 0; t < TILE; ++t) gl[t] = t < count ? seed[b * p.N + p0 + t] : T(0);
    const T* top = act.z(L);
    if (penalty) {
      T logit[TILE];
      output_tile<TILE>(w, top, logit);
      T sum = T(0);
      for (int t = 0; t < count; ++t) {
        T dq;
        sum += gl[t] * penalty_term(logit[t], truncate, dq);
        gl[t] *= dq;
      }
      shared_add(penalty + slot, sum);
    }
    for (int k = 0; k < H; ++k) {
      for (int t = 0; t < TILE; ++t) {
        const T v = gl[t] * w.w_out()[k];  // computed unconditionally, so the select vectorizes
        g[k * TILE + t] = top[k * TILE + t] > T(0) ? v : T(0);
      }
    }
    for (int l = L - 1; l >= 0; --l) {
      // z_{l+1} = W_l m_l(z_l) + b_l (+ h_k for odd l): u = dL/dm_l = W_l^T dL/dz_{l+1}.
      matmul_tile<TILE>(w.w(l), 1, H, H, H, l % 2 ? g : ga, static_cast<const T*>(nullptr),
                        static_cast<const T*>(nullptr), u);
      T* grad_scale = grad_mod + (slot * 2 * L + l) * H;
      // Odd l: dL/da afresh. Even l: z_l = h_k also feeds the skip, whose gradient g holds.
      modulate_backward<TILE>(p.modulation(p.scale, b, l), p.modulation(p.shift, b, l), H, act.z(l), u, grad_scale,
                              grad_scale + L * H, l % 2 ? ga : g, l % 2 == 0);
    }
    matmul_tile<TILE>(w.w_in(), 1, w.D, w.D, H, g, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), x);
    for (int t = 0; t < count; ++t)
      for (int d = 0; d < w.D; ++d) grad_inputs[(b * p.N + p0 + t) * w.D + d] = x[d * TILE + t];
  }
};

}  // namespace handgeom::occupancy
