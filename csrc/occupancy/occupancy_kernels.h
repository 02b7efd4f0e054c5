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
// tile); nothing per layer reaches memory. CPU tiles are 32 points; a CUDA thread is a tile of 1,
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

// y[r][t] = bias[r] + sum_c m[r * rs + c * cs] x[c][t] for r < R, t < TILE (x: [C][TILE],
// y: [R][TILE]). (rs, cs) = (C, 1) multiplies by a row-major matrix, (1, R) by its transpose.
// Eight rows at a time keep 8 x TILE accumulators in registers while x streams from L1.
template <int TILE, typename T>
HG_CLONE_INLINE void matmul_tile(const T* m, int64_t rs, int64_t cs, int R, int C, const T* x, const T* bias, T* y) {
  constexpr int kRows = 8;
  int r0 = 0;
  for (; r0 + kRows <= R; r0 += kRows) {
    T acc[kRows][TILE];
    for (int r = 0; r < kRows; ++r)
      for (int t = 0; t < TILE; ++t) acc[r][t] = bias ? bias[r0 + r] : T(0);
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
  for (; r0 < R; ++r0) {  // rows left over (input features, D % 8)
    T acc[TILE];
    for (int t = 0; t < TILE; ++t) acc[t] = bias ? bias[r0] : T(0);
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

// The forward pass of one tile: x [D][TILE] in, h [H][TILE] = h_{L/2} out. With `record`, the
// input of every modulation (z_l: h_k for even l, a for odd l) is kept in record[l] for the
// backward pass. u and a are scratch.
template <int TILE, typename T>
HG_CLONE_INLINE void forward_tile(const Problem<T>& p, int64_t b, const T* x, T* h, T* u, T* a, T* record) {
  const Weights<T>& w = p.weights;
  const int H = w.H, HT = H * TILE;
  matmul_tile<TILE>(w.w_in(), w.D, 1, H, w.D, x, w.b_in(), h);
  for (int l = 0; l < w.L; l += 2) {
    if (record) {
      for (int i = 0; i < HT; ++i) record[l * HT + i] = h[i];
    }
    modulate<TILE>(p.modulation(p.scale, b, l), p.modulation(p.shift, b, l), H, h, u);
    matmul_tile<TILE>(w.w(l), H, 1, H, H, u, w.b(l), a);
    if (record) {
      for (int i = 0; i < HT; ++i) record[(l + 1) * HT + i] = a[i];
    }
    modulate<TILE>(p.modulation(p.scale, b, l + 1), p.modulation(p.shift, b, l + 1), H, a, u);
    matmul_tile<TILE>(w.w(l + 1), H, 1, H, H, u, w.b(l + 1), a);
    for (int i = 0; i < HT; ++i) h[i] += a[i];
  }
}

// sum_t a[t] (b ? b[t] : 1) over a tile, in 8 lanes: a plain float sum is a sequential dependency
// the compiler may not reorder, which would keep the whole loop scalar.
template <int TILE, typename T>
HG_CLONE_INLINE T tile_sum(const T* a, const T* b) {
  constexpr int kLanes = TILE < 8 ? TILE : 8;
  static_assert(TILE % kLanes == 0, "tiles are 1 point or a multiple of 8");
  T lane[kLanes] = {};
  for (int t = 0; t < TILE; t += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += a[t + j] * (b ? b[t + j] : T(1));
  T sum = T(0);
  for (int j = 0; j < kLanes; ++j) sum += lane[j];
  return sum;
}

// Loads points [p0, p0 + TILE) of sample b as x [D][TILE]; points past N read as zeros.
template <int TILE, typename T>
HG_CLONE_INLINE int load_tile(const Problem<T>& p, int64_t b, int64_t p0, T* x) {
  const int D = p.weights.D;
  const int count = int(hg_min<int64_t>(TILE, p.N - p0));
  for (int t = 0; t < TILE; ++t)
    for (int d = 0; d < D; ++d) x[d * TILE + t] = t < count ? p.inputs[(b * p.N + p0 + t) * D + d] : T(0);
  return count;
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
    T x[kMaxInputs * TILE], h[kMaxWidth * TILE], u[kMaxWidth * TILE], a[kMaxWidth * TILE];
    const int count = load_tile<TILE>(p, b, p0, x);
    forward_tile<TILE>(p, b, x, h, u, a, static_cast<T*>(nullptr));
    const Weights<T>& w = p.weights;
    T logit[TILE];
    for (int t = 0; t < TILE; ++t) logit[t] = w.b_out();
    for (int k = 0; k < w.H; ++k)
      for (int t = 0; t < TILE; ++t) logit[t] += w.w_out()[k] * relu(h[k * TILE + t]);
    for (int t = 0; t < count; ++t) logits[b * p.N + p0 + t] = logit[t];
  }
};

// Gradients for grad_logits [B, N]: grad_inputs [B, N, D] per point, and the modulation gradients
// summed over the points of a slot: grad_mod [B * slots, 2, L, H] (scale, then shift). Task i is
// tile i % tiles_per_slot of slot i / tiles_per_slot (slot = sample * slots + part); the launcher
// runs a slot's tasks on one CPU task, or adds them atomically on CUDA (Launcher::grouped).
template <typename T, int TILE>
struct Backward : StagedWeights<Backward<T, TILE>, T> {
  Problem<T> p;
  const T* grad_logits;
  T* grad_inputs;
  T* grad_mod;
  int64_t slots, tiles_per_slot;

  HG_CPU_CLONES HG_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t slot = i / tiles_per_slot, b = slot / slots;
    const int64_t p0 = ((slot % slots) * tiles_per_slot + i % tiles_per_slot) * TILE;
    if (p0 >= p.N) return;
    const Weights<T>& w = p.weights;
    const int H = w.H, L = w.L, HT = H * TILE;
    T x[kMaxInputs * TILE], h[kMaxWidth * TILE], u[kMaxWidth * TILE], a[kMaxWidth * TILE];
    T record[kMaxLayers * kMaxWidth * TILE];
    const int count = load_tile<TILE>(p, b, p0, x);
    forward_tile<TILE>(p, b, x, h, u, a, record);

    // g = dL/dh_{L/2}; points past N have zero gradient.
    T gl[TILE];
    for (int t = 0; t < TILE; ++t) gl[t] = t < count ? grad_logits[b * p.N + p0 + t] : T(0);
    T* g = h;
    for (int k = 0; k < H; ++k)
      for (int t = 0; t < TILE; ++t) g[k * TILE + t] = h[k * TILE + t] > T(0) ? gl[t] * w.w_out()[k] : T(0);
    T* gz = a;  // dL/dz_l
    for (int l = L - 1; l >= 0; --l) {
      // z_{l+1} (or h's residual branch) = W_l relu(s_l z_l + t_l) + b_l: u = W_l^T g_out, masked.
      const T* g_out = l % 2 ? g : gz;
      matmul_tile<TILE>(w.w(l), 1, H, H, H, g_out, static_cast<const T*>(nullptr), u);
      const T* s = p.modulation(p.scale, b, l);
      const T* sh = p.modulation(p.shift, b, l);
      const T* z = record + l * HT;
      T* gs = grad_mod + (slot * 2 * L + l) * H;
      T* gt = gs + L * H;
      for (int k = 0; k < H; ++k) {
        T* gu = u + k * TILE;  // dL/d(s z + t): the ReLU's mask applied in place
        const T* zk = z + k * TILE;
        for (int t = 0; t < TILE; ++t) gu[t] = s[k] * zk[t] + sh[k] > T(0) ? gu[t] : T(0);
        shared_add(gs + k, tile_sum<TILE>(gu, zk));
        shared_add(gt + k, tile_sum<TILE>(gu, static_cast<const T*>(nullptr)));
        if (l % 2) {
          for (int t = 0; t < TILE; ++t) gz[k * TILE + t] = gu[t] * s[k];
        } else {
          for (int t = 0; t < TILE; ++t) g[k * TILE + t] += gu[t] * s[k];  // the skip already holds dL/dh_k
        }
      }
    }
    matmul_tile<TILE>(w.w_in(), 1, w.D, w.D, H, g, static_cast<const T*>(nullptr), x);
    for (int t = 0; t < count; ++t)
      for (int d = 0; d < w.D; ++d) grad_inputs[(b * p.N + p0 + t) * w.D + d] = x[d * TILE + t];
  }
};

}  // namespace handgeom::occupancy
