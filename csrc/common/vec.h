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

}  // namespace handgeom
