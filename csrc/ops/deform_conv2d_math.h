// Bilinear sampling of deformable convolution, shared by the CPU and CUDA kernels,
// with torchvision's rules: a point (h, w) samples the map only when
// -1 < h < H and -1 < w < W; corners outside the map read as 0.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/hd.h"

namespace nasx::ops {

// Corner plane offsets (-1: reads 0) in the order (low, low), (low, high),
// (high, low), (high, high) of (h, w), and the fractional parts lh, lw.
template <typename T>
struct DeformSample {
  int32_t idx[4];
  T lh, lw;

  NASX_HD T hh() const { return T(1) - lh; }
  NASX_HD T hw() const { return T(1) - lw; }
  // Bilinear weight of corner i.
  NASX_HD T weight(int i) const {
    return (i < 2 ? hh() : lh) * ((i & 1) ? lw : hw());
  }
};

template <typename T>
NASX_HD DeformSample<T> deform_sample(T h, T w, int64_t height, int64_t width) {
  DeformSample<T> s;
  // NaN compares false: a NaN offset samples nothing.
  if (!(h > T(-1) && h < T(height) && w > T(-1) && w < T(width))) {
    for (int i = 0; i < 4; ++i) s.idx[i] = -1;
    s.lh = s.lw = T(0);
    return s;
  }
  // floor without a libm call (h, w > -1 here): truncate, then step down for negative fractions.
  int64_t h_low = static_cast<int64_t>(h), w_low = static_cast<int64_t>(w);
  if (h < static_cast<T>(h_low)) --h_low;
  if (w < static_cast<T>(w_low)) --w_low;
  const T fh = static_cast<T>(h_low), fw = static_cast<T>(w_low);
  const int64_t h_high = h_low + 1, w_high = w_low + 1;
  s.lh = h - fh;
  s.lw = w - fw;
  const bool hl = h_low >= 0, hhi = h_high <= height - 1, wl = w_low >= 0, whi = w_high <= width - 1;
  s.idx[0] = hl && wl ? static_cast<int32_t>(h_low * width + w_low) : -1;
  s.idx[1] = hl && whi ? static_cast<int32_t>(h_low * width + w_high) : -1;
  s.idx[2] = hhi && wl ? static_cast<int32_t>(h_high * width + w_low) : -1;
  s.idx[3] = hhi && whi ? static_cast<int32_t>(h_high * width + w_high) : -1;
  return s;
}

// A sample with its bilinear weights and mask value, decoded once and applied to
// every channel of a block.
template <typename T>
struct DecodedSample {
  DeformSample<T> s;
  T w[4];
  T mask;
  bool any;  // some corner lies on the map
  bool all;  // all four do
};

template <typename T>
NASX_HD DecodedSample<T> decode(const DeformSample<T>& s, T mask) {
  DecodedSample<T> d;
  d.s = s;
  for (int i = 0; i < 4; ++i) d.w[i] = s.weight(i);
  d.mask = mask;
  d.any = (s.idx[0] & s.idx[1] & s.idx[2] & s.idx[3]) != -1;  // not all four -1
  d.all = (s.idx[0] | s.idx[1] | s.idx[2] | s.idx[3]) >= 0;
  return d;
}

// The four corner values of one sample in one plane.
template <typename T>
struct Corners {
  T v[4];
};

template <typename T>
NASX_HD Corners<T> corners(const T* plane, const DeformSample<T>& s) {
  Corners<T> c;
  for (int i = 0; i < 4; ++i) c.v[i] = s.idx[i] >= 0 ? plane[s.idx[i]] : T(0);
  return c;
}

// corners(), without per-corner checks when the whole sample lies on the map.
template <typename T>
NASX_HD Corners<T> load_corners(const T* plane, const DecodedSample<T>& d) {
  if (d.all) return Corners<T>{{plane[d.s.idx[0]], plane[d.s.idx[1]], plane[d.s.idx[2]], plane[d.s.idx[3]]}};
  return corners(plane, d.s);
}

// Interpolated value: w1 v1 + w2 v2 + w3 v3 + w4 v4.
template <typename T>
NASX_HD T interpolate(const DeformSample<T>& s, const Corners<T>& c) {
  const T hh = s.hh(), hw = s.hw();
  return hh * hw * c.v[0] + hh * s.lw * c.v[1] + s.lh * hw * c.v[2] + s.lh * s.lw * c.v[3];
}

// d value / d h and d value / d w.
template <typename T>
NASX_HD T d_dh(const DeformSample<T>& s, const Corners<T>& c) {
  return s.lw * (c.v[3] - c.v[1]) + s.hw() * (c.v[2] - c.v[0]);
}
template <typename T>
NASX_HD T d_dw(const DeformSample<T>& s, const Corners<T>& c) {
  return s.lh * (c.v[3] - c.v[2]) + s.hh() * (c.v[1] - c.v[0]);
}

// Where tap k = (i, j) of output pixel (oy, ox) samples before its offset.
NASX_HD int64_t tap_origin(int64_t o, int64_t stride, int64_t pad, int64_t i, int64_t dilation) {
  return o * stride - pad + i * dilation;
}

}  // namespace nasx::ops
