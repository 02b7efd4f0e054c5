// Small fixed-size vectors for kernel bodies (host and device).
#pragma once

#include "common/device.h"

namespace handgeom {

template <typename T>
struct Vec2 {
  T x, y;
  HG_HOST_DEVICE Vec2 operator+(Vec2 o) const { return {x + o.x, y + o.y}; }
  HG_HOST_DEVICE Vec2 operator-(Vec2 o) const { return {x - o.x, y - o.y}; }
  HG_HOST_DEVICE Vec2 operator*(T s) const { return {x * s, y * s}; }
  HG_HOST_DEVICE Vec2& operator+=(Vec2 o) { x += o.x; y += o.y; return *this; }
};

template <typename T>
HG_HOST_DEVICE T dot(Vec2<T> a, Vec2<T> b) { return a.x * b.x + a.y * b.y; }

template <typename T>
HG_HOST_DEVICE T norm(Vec2<T> a) { return sqrt(dot(a, a)); }

template <typename T>
struct Vec3 {
  T x, y, z;
  HG_HOST_DEVICE static Vec3 load(const T* p) { return {p[0], p[1], p[2]}; }
  HG_HOST_DEVICE void store(T* p) const { p[0] = x; p[1] = y; p[2] = z; }
  HG_HOST_DEVICE T operator[](int i) const { return i == 0 ? x : i == 1 ? y : z; }
  HG_HOST_DEVICE Vec3 operator+(Vec3 o) const { return {x + o.x, y + o.y, z + o.z}; }
  HG_HOST_DEVICE Vec3 operator-(Vec3 o) const { return {x - o.x, y - o.y, z - o.z}; }
  HG_HOST_DEVICE Vec3 operator*(T s) const { return {x * s, y * s, z * s}; }
  HG_HOST_DEVICE Vec3& operator+=(Vec3 o) { x += o.x; y += o.y; z += o.z; return *this; }
};

template <typename T>
HG_HOST_DEVICE T dot(Vec3<T> a, Vec3<T> b) { return a.x * b.x + a.y * b.y + a.z * b.z; }

template <typename T>
HG_HOST_DEVICE Vec3<T> cross(Vec3<T> a, Vec3<T> b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

template <typename T>
HG_HOST_DEVICE Vec3<T> vmin(Vec3<T> a, Vec3<T> b) { return {hg_min(a.x, b.x), hg_min(a.y, b.y), hg_min(a.z, b.z)}; }

template <typename T>
HG_HOST_DEVICE Vec3<T> vmax(Vec3<T> a, Vec3<T> b) { return {hg_max(a.x, b.x), hg_max(a.y, b.y), hg_max(a.z, b.z)}; }

}  // namespace handgeom
