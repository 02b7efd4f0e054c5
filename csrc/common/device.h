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

namespace handgeom {

template <typename T>
HG_HOST_DEVICE T hg_min(T a, T b) { return a < b ? a : b; }

template <typename T>
HG_HOST_DEVICE T hg_max(T a, T b) { return a > b ? a : b; }

template <typename T>
HG_HOST_DEVICE T hg_clamp(T x, T lo, T hi) { return hg_min(hg_max(x, lo), hi); }

}  // namespace handgeom
