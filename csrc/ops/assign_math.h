// Pieces of match_anchors and atss_assign shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/box_math.h"

namespace nasx::ops {

template <typename T>
NASX_HD bool is_nan(T v) {
  return v != v;
}

// torch.max's order: NaN is the largest value, and of equal values the first wins.
// True when v (seen later) replaces the current best.
template <typename T>
NASX_HD bool replaces_max(T v, T best) {
  return !is_nan(best) && (is_nan(v) || v > best);
}

// Matcher's labels from an anchor's best IoU: -1 below low, -2 in [low, high).
// The thresholds are rounded to the IoU's dtype first: torch compares a float
// tensor with a Python float in the tensor's dtype.
template <typename T>
NASX_HD int64_t matcher_label(T v, int64_t best_gt, T high, T low) {
  if (v < low) return -1;
  if (v >= low && v < high) return -2;
  return best_gt;  // also for a NaN IoU, as torchvision
}

// ATSS: the anchor centre must lie inside the GT by more than this many pixels
// (the authors' code uses min(l, t, r, b) > 0.01).
constexpr double kAtssInsideEps = 0.01;

// Distance of two centres as the authors compute it: sqrt(dx^2 + dy^2), no fused products.
template <typename T>
NASX_HD T centre_distance(T ax, T ay, T bx, T by) {
  const T dx = ax - bx, dy = ay - by;
#if defined(__CUDA_ARCH__)
  return sqrt(mul_rn(dx, dx) + mul_rn(dy, dy));
#else
  return std::sqrt(dx * dx + dy * dy);
#endif
}

// Candidate order of ATSS: by distance, NaN last, equal distances by anchor index.
template <typename T>
NASX_HD bool closer(T da, int64_t ia, T db, int64_t ib) {
  const bool na = is_nan(da), nb = is_nan(db);
  if (na != nb) return nb;
  if (!na && da != db) return da < db;
  return ia < ib;
}

// ATSS's IoU threshold of one GT: mean + unbiased std of its candidates' IoUs, in
// double. Values are shifted by the first IoU first, so that equal IoUs give
// exactly that IoU (std 0) whatever the summation order; one candidate has no
// std (NaN), so nothing passes, as torch.std in the authors' code.
template <typename T>
NASX_HD double atss_threshold(const T* ious, int64_t c) {
  if (c <= 0) return 0.0;
  const double shift = static_cast<double>(ious[0]);
  double sum = 0;
  for (int64_t q = 0; q < c; ++q) sum += static_cast<double>(ious[q]) - shift;
  const double mean = sum / static_cast<double>(c);
  double sq = 0;
  for (int64_t q = 0; q < c; ++q) {
    const double d = (static_cast<double>(ious[q]) - shift) - mean;
    sq += d * d;
  }
#if defined(__CUDA_ARCH__)
  return shift + mean + sqrt(sq / static_cast<double>(c - 1));
#else
  return shift + mean + std::sqrt(sq / static_cast<double>(c - 1));
#endif
}

}  // namespace nasx::ops
