// HG_HOST_DEVICE marks a kernel body that nvcc compiles for host and device and a plain C++
// compiler compiles as an ordinary inline function. Every kernel body in handgeom is written
// once with it, so the CPU tests execute the arithmetic the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define HG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HG_HOST_DEVICE inline
#endif

// The compute-bound CPU bodies (dense MLP tiles) are compiled for AVX-512, AVX2+FMA and baseline
// x86-64; the loader picks the best the CPU has (GCC function multiversioning). Elsewhere a no-op.
// Helpers they call are HG_CLONE_INLINE (inlined, so each clone compiles them for its ISA too) or
// HG_CLONE_OWN (cloned themselves).
#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define HG_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define HG_CLONE_INLINE inline __attribute__((always_inline))
// A hot inner kernel (a register-blocked tile product) compiled as a function of its own in each
// clone: inlined into a large body it shares that body's registers and spills its accumulators.
#define HG_CLONE_OWN __attribute__((noinline)) HG_CPU_CLONES
#else
#define HG_CPU_CLONES
#define HG_CLONE_INLINE HG_HOST_DEVICE
#define HG_CLONE_OWN HG_HOST_DEVICE
#endif

namespace handgeom {

template <typename T>
HG_HOST_DEVICE constexpr T hg_min(T a, T b) { return a < b ? a : b; }

template <typename T>
HG_HOST_DEVICE constexpr T hg_max(T a, T b) { return a > b ? a : b; }

template <typename T>
HG_HOST_DEVICE constexpr T hg_clamp(T x, T lo, T hi) { return hg_min(hg_max(x, lo), hi); }

template <typename T>
HG_HOST_DEVICE T hg_abs(T x) { return x < T(0) ? -x : x; }

// Adds to memory that several GPU threads may update at once (atomicAdd on CUDA: the order, and
// so the float rounding, varies between runs). CPU launchers give each such output one owning
// task (see Launcher::grouped), where plain addition is exact and deterministic.
template <typename T>
HG_HOST_DEVICE void shared_add(T* p, T v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

HG_HOST_DEVICE int floor_log2(uint64_t x) {  // x > 0
#if defined(__CUDA_ARCH__)
  return 63 - __clzll(static_cast<long long>(x));
#else
  return 63 - __builtin_clzll(x);
#endif
}

}  // namespace handgeom
