// The FCOS assignment rule for one (point, GT) pair, shared by the CPU and CUDA
// kernels. The arithmetic follows the authors' code step by step (same operations,
// same order), so the decisions agree with a vectorised pure-torch version bit for bit.
#pragma once

#include "ops/box_math.h"

namespace nasx::ops {

// A GT box with what every point needs from it.
template <typename T>
struct FcosGt {
  T x1, y1, x2, y2, cx, cy, area;
};

template <typename T>
NASX_HD FcosGt<T> make_fcos_gt(const T* b) {
  FcosGt<T> g;
  g.x1 = b[0];
  g.y1 = b[1];
  g.x2 = b[2];
  g.y2 = b[3];
  g.cx = (b[0] + b[2]) / T(2);
  g.cy = (b[1] + b[3]) / T(2);
  g.area = box_area(b[0], b[1], b[2], b[3]);
  return g;
}

// Half-size of the centre-sampling square (center_radius * stride), or -1 for
// plain FCOS; an explicit product, so that nvcc cannot fuse it into cx - half.
template <typename T>
NASX_HD T fcos_half_size(T stride, bool center_sampling, T radius) {
  return center_sampling ? mul_rn(stride, radius) : T(-1);
}

// Is the point (x, y) a candidate for g? `half` is center_radius * stride (center
// sampling) or negative (plain FCOS: strictly inside the box); lo/hi the level's
// range for max(l, t, r, b), both ends inclusive. NaN anywhere makes it no candidate.
template <typename T>
NASX_HD bool fcos_candidate(T x, T y, T half, T lo, T hi, const FcosGt<T>& g) {
  const T l = x - g.x1, t = y - g.y1, r = g.x2 - x, b = g.y2 - y;
  bool inside;
  if (half >= T(0)) {
    // The square of half-size `half` around the centre, clipped to the box.
    const T xmin = g.cx - half, ymin = g.cy - half, xmax = g.cx + half, ymax = g.cy + half;
    const T cx1 = xmin > g.x1 ? xmin : g.x1;
    const T cy1 = ymin > g.y1 ? ymin : g.y1;
    const T cx2 = xmax > g.x2 ? g.x2 : xmax;
    const T cy2 = ymax > g.y2 ? g.y2 : ymax;
    inside = x - cx1 > T(0) && y - cy1 > T(0) && cx2 - x > T(0) && cy2 - y > T(0);
  } else {
    inside = l > T(0) && t > T(0) && r > T(0) && b > T(0);
  }
  if (!inside) return false;
  T m = l > t ? l : t;
  m = m > r ? m : r;
  m = m > b ? m : b;
  return m >= lo && m <= hi;
}

// Writes (l, t, r, b) and the centerness of the point's assigned GT.
template <typename T>
NASX_HD void fcos_encode(T x, T y, const FcosGt<T>& g, T* reg, T* centerness) {
  const T l = x - g.x1, t = y - g.y1, r = g.x2 - x, b = g.y2 - y;
  reg[0] = l;
  reg[1] = t;
  reg[2] = r;
  reg[3] = b;
  const T lr = (l < r ? l : r) / (l > r ? l : r);
  const T tb = (t < b ? t : b) / (t > b ? t : b);
#if defined(__CUDA_ARCH__)
  *centerness = sqrt(lr * tb);
#else
  *centerness = std::sqrt(lr * tb);
#endif
}

}  // namespace nasx::ops
