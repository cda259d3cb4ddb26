// RoIAlign sampling arithmetic shared by the CPU and CUDA kernels, in the same
// order of operations as torchvision's kernels, so that results agree with it.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/hd.h"

namespace nasx::ops {

// Where one RoI samples the feature map: bin (ph, pw) averages a grid_h x grid_w
// grid of bilinear samples, sample (iy, ix) at
//   y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h   (x likewise).
template <typename T>
struct RoiGeometry {
  int64_t batch;
  T start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;
  T count;  // samples per bin, at least 1

  NASX_HD T sample_y(int ph, int iy) const {
    return start_h + ph * bin_h + static_cast<T>(iy + .5f) * bin_h / static_cast<T>(grid_h);
  }
  NASX_HD T sample_x(int pw, int ix) const {
    return start_w + pw * bin_w + static_cast<T>(ix + .5f) * bin_w / static_cast<T>(grid_w);
  }
};

// Adaptive grid: ceil(roi extent / bins). Negative or NaN extents sample nothing
// (torchvision's loops run zero times there too; the bin is then 0).
template <typename T>
NASX_HD int adaptive_grid(T extent, int bins) {
  const T g = ceil(extent / bins);
  return g >= T(1) ? static_cast<int>(g) : 0;
}

template <typename T>
NASX_HD RoiGeometry<T> roi_geometry(const T* roi, T spatial_scale, int pooled_h, int pooled_w, int sampling_ratio,
                                    bool aligned) {
  RoiGeometry<T> g;
  g.batch = static_cast<int64_t>(roi[0]);
  // aligned: pixel (i, j) has its centre at (i + 0.5, j + 0.5) in box coordinates.
  const T offset = aligned ? T(0.5) : T(0);
  g.start_w = roi[1] * spatial_scale - offset;
  g.start_h = roi[2] * spatial_scale - offset;
  const T end_w = roi[3] * spatial_scale - offset;
  const T end_h = roi[4] * spatial_scale - offset;
  T roi_w = end_w - g.start_w, roi_h = end_h - g.start_h;
  if (!aligned) {  // the legacy behaviour forces RoIs to be at least 1x1
    roi_w = roi_w > T(1) ? roi_w : T(1);
    roi_h = roi_h > T(1) ? roi_h : T(1);
  }
  g.bin_h = roi_h / static_cast<T>(pooled_h);
  g.bin_w = roi_w / static_cast<T>(pooled_w);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_h, pooled_h);
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_w, pooled_w);
  const int n = g.grid_h * g.grid_w;
  g.count = static_cast<T>(n > 1 ? n : 1);
  return g;
}

// One bilinear sample: four plane offsets and weights. A sample more than one
// pixel outside the map is empty (weights 0, offsets 0: the forward still adds
// 0 * plane[0], exactly as torchvision; the backward skips it).
template <typename T>
struct Tap {
  int64_t pos[4];
  T w[4];
  bool empty;
};

template <typename T>
NASX_HD Tap<T> bilinear_tap(int64_t height, int64_t width, T y, T x) {
  Tap<T> t;
  if (y < -1.0 || y > height || x < -1.0 || x > width) {
    for (int i = 0; i < 4; ++i) {
      t.pos[i] = 0;
      t.w[i] = T(0);
    }
    t.empty = true;
    return t;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - y_low, lx = x - x_low;
  const T hy = T(1) - ly, hx = T(1) - lx;
  t.pos[0] = y_low * width + x_low;
  t.pos[1] = y_low * width + x_high;
  t.pos[2] = y_high * width + x_low;
  t.pos[3] = y_high * width + x_high;
  t.w[0] = hy * hx;
  t.w[1] = hy * lx;
  t.w[2] = ly * hx;
  t.w[3] = ly * lx;
  t.empty = false;
  return t;
}

// Calls f(tap) for every bilinear sample of bin (i, j), in torchvision's order:
// the setup that the forward and the backward of both backends share.
template <typename T, typename F>
NASX_HD void for_each_bin_tap(const RoiGeometry<T>& g, int i, int j, int64_t height, int64_t width, F&& f) {
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const T y = g.sample_y(i, iy);
    for (int ix = 0; ix < g.grid_w; ++ix) f(bilinear_tap<T>(height, width, y, g.sample_x(j, ix)));
  }
}

}  // namespace nasx::ops
