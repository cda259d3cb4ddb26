// Input checks of the feature-map ops (roi_align, deform_conv2d) and roi_align's
// prologue, shared by both backends (deform_conv2d's is in deform_conv2d_args.h).
// Messages name the op, the argument, what was expected and what came; the
// exception types map to Python's TypeError / ValueError.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "ops/checks.h"

namespace nasx::ops {

// Kernels index inside one feature plane with 32-bit integers (and everything
// across planes with 64-bit ones).
inline void check_plane(int64_t height, int64_t width, const char* op) {
  TORCH_CHECK_VALUE(height * width <= std::numeric_limits<int32_t>::max(), op,
                    ": a feature plane of ", height, " x ", width, " exceeds 2^31 elements");
}

// --- roi_align -----------------------------------------------------------------

inline void check_roi_align_args(const at::Tensor& rois, double spatial_scale, int64_t ph, int64_t pw,
                                 const char* op) {
  check_float(rois, op, "rois");
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, op,
                    ": expected rois of shape [K, 5] (batch index, x1, y1, x2, y2), got shape ", rois.sizes());
  check_positive(ph, op, "pooled_height");
  check_positive(pw, op, "pooled_width");
  TORCH_CHECK_VALUE(std::isfinite(spatial_scale) && spatial_scale > 0, op,
                    ": expected spatial_scale > 0, got ", spatial_scale);
}

// roi_align and its backward in the compute dtype: `data` is the input [N, C, H, W]
// (forward) or the output gradient [K, C, ph, pw] (backward), `out` what the
// kernel fills: the pooled output (uninitialised: every element is written) or the
// input gradient (zeros: it is scattered into).
struct RoiAlignProblem {
  at::ScalarType in_dtype;
  at::Tensor data, rois, out;
  int64_t batch, channels, height, width, num_rois;

  at::Tensor result() const { return out.to(in_dtype); }
};

inline RoiAlignProblem prepare_roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                         int64_t ph, int64_t pw) {
  const char* op = "roi_align";
  check_float(input, op, "input");
  check_dim(input, 4, op, "input", "[N, C, H, W]");
  check_roi_align_args(rois, spatial_scale, ph, pw, op);
  check_same_device(input, "input", rois, "rois", op);
  check_plane(input.size(2), input.size(3), op);
  RoiAlignProblem r;
  r.in_dtype = input.scalar_type();
  const auto dtype = compute_dtype(r.in_dtype);
  r.data = input.to(dtype).contiguous();
  r.rois = rois.to(dtype).contiguous();
  r.batch = input.size(0);
  r.channels = input.size(1);
  r.height = input.size(2);
  r.width = input.size(3);
  r.num_rois = rois.size(0);
  r.out = at::empty({r.num_rois, r.channels, ph, pw}, r.data.options());
  return r;
}

inline RoiAlignProblem prepare_roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                                  double spatial_scale, int64_t ph, int64_t pw, int64_t batch,
                                                  int64_t channels, int64_t height, int64_t width) {
  const char* op = "roi_align_backward";
  check_float(grad, op, "grad");
  check_roi_align_args(rois, spatial_scale, ph, pw, op);
  check_same_device(grad, "grad", rois, "rois", op);
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels && grad.size(2) == ph &&
                        grad.size(3) == pw,
                    op, ": expected grad of shape [", num_rois, ", ", channels, ", ", ph, ", ", pw, "], got shape ",
                    grad.sizes());
  check_plane(height, width, op);
  RoiAlignProblem r;
  r.in_dtype = grad.scalar_type();
  const auto dtype = compute_dtype(r.in_dtype);
  r.data = grad.to(dtype).contiguous();
  r.rois = rois.to(dtype).contiguous();
  r.batch = batch;
  r.channels = channels;
  r.height = height;
  r.width = width;
  r.num_rois = num_rois;
  r.out = at::zeros({batch, channels, height, width}, r.data.options());
  return r;
}

}  // namespace nasx::ops
