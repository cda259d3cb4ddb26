// Input validation of the target-assignment and loss ops (fcos_targets,
// match_anchors, atss_assign, sigmoid_focal_loss), shared by CPU and CUDA.
// Same rules as box_checks.h: name the op, the argument, what was expected and what came.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "ops/box_checks.h"

namespace nasx::ops {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.is_floating_point(), op, ": expected ", name,
                   " to be a floating-point tensor (float16, bfloat16, float32 or float64), got ", t.scalar_type());
}

// Real numbers: floating point or integer, not bool or complex.
inline void check_real(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(!t.is_complex() && t.scalar_type() != at::kBool, op, ": expected ", name,
                   " to be a real (floating-point or integer) tensor, got ", t.scalar_type());
}

inline void check_finite_arg(double value, const char* name, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(value), op, ": expected ", name, " to be a finite number, got ", value);
}

// points [P, 2], strides [P], size_ranges [P, 2] of fcos_targets.
inline void check_fcos_points(const at::Tensor& points, const at::Tensor& strides, const at::Tensor& size_ranges,
                              const char* op) {
  check_float(points, op, "points");
  TORCH_CHECK_VALUE(points.dim() == 2 && points.size(1) == 2, op,
                    ": expected points of shape [P, 2] (x, y), got shape ", points.sizes());
  const int64_t p = points.size(0);
  check_real(strides, op, "strides");
  TORCH_CHECK_VALUE(strides.dim() == 1 && strides.size(0) == p, op,
                    ": expected strides of shape [P] with P = points.size(0) = ", p, ", got shape ", strides.sizes());
  check_real(size_ranges, op, "size_ranges");
  TORCH_CHECK_VALUE(size_ranges.dim() == 2 && size_ranges.size(0) == p && size_ranges.size(1) == 2, op,
                    ": expected size_ranges of shape [P, 2] (lo, hi) with P = points.size(0) = ", p,
                    ", got shape ", size_ranges.sizes());
  check_same_device(points, "points", strides, "strides", op);
  check_same_device(points, "points", size_ranges, "size_ranges", op);
}

inline void check_match_inputs(const at::Tensor& anchors, const at::Tensor& gt_boxes, double high, double low,
                               const char* op) {
  check_boxes(anchors, op, "anchors");
  check_boxes(gt_boxes, op, "gt_boxes");
  check_same_device(anchors, "anchors", gt_boxes, "gt_boxes", op);
  TORCH_CHECK_VALUE(!std::isnan(high) && !std::isnan(low), op, ": thresholds must be numbers, got high_threshold ",
                    high, " and low_threshold ", low);
  TORCH_CHECK_VALUE(low <= high, op, ": expected low_threshold <= high_threshold, got low_threshold ", low,
                    " and high_threshold ", high);
}

inline void check_atss_inputs(const at::Tensor& anchors, at::IntArrayRef per_level, const at::Tensor& gt_boxes,
                              int64_t topk, const char* op) {
  check_boxes(anchors, op, "anchors");
  check_boxes(gt_boxes, op, "gt_boxes");
  check_same_device(anchors, "anchors", gt_boxes, "gt_boxes", op);
  int64_t total = 0;
  for (int64_t c : per_level) {
    TORCH_CHECK_VALUE(c >= 0, op, ": expected num_anchors_per_level to hold counts >= 0, got ", per_level);
    total += c;
  }
  TORCH_CHECK_VALUE(total == anchors.size(0), op, ": expected num_anchors_per_level to sum to anchors.size(0) = ",
                    anchors.size(0), ", got ", per_level, " (sum ", total, ")");
  TORCH_CHECK_VALUE(topk >= 1, op, ": expected topk >= 1, got ", topk);
}

// Padded GTs of a batch: gt_boxes [B, G, 4], gt_valid [B, G] bool.
inline void check_batched_gt(const at::Tensor& gt_boxes, const at::Tensor& gt_valid, const char* op) {
  check_float(gt_boxes, op, "gt_boxes");
  TORCH_CHECK_VALUE(gt_boxes.dim() == 3 && gt_boxes.size(2) == 4, op,
                    ": expected gt_boxes of shape [B, G, 4] (x1, y1, x2, y2), got shape ", gt_boxes.sizes());
  TORCH_CHECK_TYPE(gt_valid.scalar_type() == at::kBool, op, ": expected gt_valid to be a bool tensor, got ",
                   gt_valid.scalar_type());
  TORCH_CHECK_VALUE(gt_valid.dim() == 2 && gt_valid.size(0) == gt_boxes.size(0) &&
                        gt_valid.size(1) == gt_boxes.size(1),
                    op, ": expected gt_valid of shape [B, G] = [", gt_boxes.size(0), ", ", gt_boxes.size(1),
                    "], got shape ", gt_valid.sizes());
}

inline void check_center_radius(const std::optional<double>& r, const char* op) {
  if (r) {
    TORCH_CHECK_VALUE(std::isfinite(*r) && *r > 0, op, ": expected center_radius > 0 (or None), got ", *r);
  }
}

}  // namespace nasx::ops

namespace nasx::ops {

inline void check_sigmoid_focal_loss_inputs(const at::Tensor& inputs, const at::Tensor& targets, double alpha,
                                            double gamma, const char* op) {
  check_float(inputs, op, "inputs");
  check_float(targets, op, "targets");
  TORCH_CHECK_VALUE(inputs.sizes() == targets.sizes(), op, ": expected targets of the same shape as inputs ",
                    inputs.sizes(), ", got shape ", targets.sizes());
  check_same_device(inputs, "inputs", targets, "targets", op);
  TORCH_CHECK_VALUE(!std::isnan(alpha), op, ": alpha must be a number, got nan");
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma >= 0, op, ": expected gamma >= 0, got ", gamma);
}

}  // namespace nasx::ops
