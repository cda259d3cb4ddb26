// Box arithmetic shared by the CPU and CUDA kernels.
//
// Every kernel computes IoU with exactly torchvision's expression
//   inter / (area_a + area_b - inter),  area = (x2 - x1) * (y2 - y1)
// and with products that are never fused into FMAs, so CPU, CUDA and
// torchvision give bit-identical IoUs and hence identical NMS decisions.
#pragma once

#include <cmath>
#include <limits>

#include "ops/hd.h"

namespace nasx::ops {

NASX_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;  // host code is built with -ffp-contract=off
#endif
}

NASX_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// max(x, 0) that propagates NaN like torch.clamp(min=0).
template <typename T>
NASX_HD T clamp_min0(T x) {
  return x < T(0) ? T(0) : x;
}

template <typename T>
NASX_HD T box_area(T x1, T y1, T x2, T y2) {
  return mul_rn(x2 - x1, y2 - y1);
}

template <typename T>
NASX_HD T intersection(T ax1, T ay1, T ax2, T ay2, T bx1, T by1, T bx2, T by2) {
  T w = clamp_min0((ax2 < bx2 ? ax2 : bx2) - (ax1 > bx1 ? ax1 : bx1));
  T h = clamp_min0((ay2 < by2 ? ay2 : by2) - (ay1 > by1 ? ay1 : by1));
  return mul_rn(w, h);
}

// IoU of two boxes given their precomputed areas.
template <typename T>
NASX_HD T iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  T inter = intersection(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2);
  return inter / (area_a + area_b - inter);
}

// torchvision compares a float IoU with a double threshold. `iou > t` for every
// float iou is the same test as `iou > threshold_as(t)`: the largest T <= t.
template <typename T>
inline T threshold_as(double t) {
  T f = static_cast<T>(t);
  if (static_cast<double>(f) > t) {
    f = std::nextafter(f, -std::numeric_limits<T>::infinity());
  }
  return f;
}

}  // namespace nasx::ops
