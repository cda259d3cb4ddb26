// Input checks and prologues of the target-assignment and loss ops (fcos_targets,
// match_anchors, atss_assign, sigmoid_focal_loss), shared by the CPU and CUDA
// kernels: each entry point checks its arguments and converts them here once, and
// the kernels start from the result. Same rules as box_checks.h: name the op, the
// argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "ops/box_checks.h"

namespace nasx::ops {

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

// --- fcos_targets, fcos_targets_batched --------------------------------------

// The inputs of both fcos ops in the compute dtype, contiguous, as a batch (one
// image for fcos_targets), and the outputs to fill: gt_index [B, P] int64,
// reg_targets [B, P, 4], centerness [B, P].
struct FcosProblem {
  at::ScalarType out_dtype;
  at::Tensor points, strides, ranges, gts, valid;  // valid [B, G] bool, undefined when every GT is real
  int64_t B, G, P;
  bool center;
  double radius;
  at::Tensor gt_index, reg, ctr;

  // The outputs in the promoted dtype of points and gt_boxes; without the batch
  // dimension for fcos_targets.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result(bool batched) const {
    at::Tensor r = reg.scalar_type() == out_dtype ? reg : reg.to(out_dtype);
    at::Tensor c = ctr.scalar_type() == out_dtype ? ctr : ctr.to(out_dtype);
    if (batched) return {gt_index, r, c};
    return {gt_index.squeeze(0), r.squeeze(0), c.squeeze(0)};
  }
};

// gt_boxes is [G, 4] (fcos_targets, gt_valid nullptr) or [B, G, 4] with gt_valid [B, G] bool.
inline FcosProblem prepare_fcos(const at::Tensor& points, const at::Tensor& strides, const at::Tensor& size_ranges,
                                const at::Tensor& gt_boxes, const at::Tensor* gt_valid,
                                std::optional<double> center_radius) {
  const char* op = gt_valid ? "fcos_targets_batched" : "fcos_targets";
  check_fcos_points(points, strides, size_ranges, op);
  if (gt_valid) {
    check_batched_gt(gt_boxes, *gt_valid, op);
    check_same_device(points, "points", *gt_valid, "gt_valid", op);
  } else {
    check_boxes(gt_boxes, op, "gt_boxes");
  }
  check_same_device(points, "points", gt_boxes, "gt_boxes", op);
  check_center_radius(center_radius, op);
  FcosProblem f;
  f.out_dtype = at::promote_types(points.scalar_type(), gt_boxes.scalar_type());
  const auto dtype = compute_dtype(f.out_dtype);
  f.points = points.to(dtype).contiguous();
  f.strides = strides.to(dtype).contiguous();
  f.ranges = size_ranges.to(dtype).contiguous();
  f.gts = (gt_valid ? gt_boxes : gt_boxes.unsqueeze(0)).to(dtype).contiguous();
  if (gt_valid) f.valid = gt_valid->contiguous();
  f.B = f.gts.size(0);
  f.G = f.gts.size(1);
  f.P = f.points.size(0);
  f.center = center_radius.has_value();
  f.radius = center_radius.value_or(0.0);
  f.gt_index = at::empty({f.B, f.P}, f.points.options().dtype(at::kLong));
  f.reg = at::empty({f.B, f.P, 4}, f.points.options());
  f.ctr = at::empty({f.B, f.P}, f.points.options());
  return f;
}

// The entry points of both fcos ops for a backend whose kernel is Run.
template <void (*Run)(FcosProblem&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor> fcos_targets_entry(const at::Tensor& points, const at::Tensor& strides,
                                                                  const at::Tensor& size_ranges,
                                                                  const at::Tensor& gt_boxes,
                                                                  std::optional<double> center_radius) {
  auto f = prepare_fcos(points, strides, size_ranges, gt_boxes, nullptr, center_radius);
  Run(f);
  return f.result(false);
}

template <void (*Run)(FcosProblem&)>
std::tuple<at::Tensor, at::Tensor, at::Tensor> fcos_targets_batched_entry(
    const at::Tensor& points, const at::Tensor& strides, const at::Tensor& size_ranges, const at::Tensor& gt_boxes,
    const at::Tensor& gt_valid, std::optional<double> center_radius) {
  auto f = prepare_fcos(points, strides, size_ranges, gt_boxes, &gt_valid, center_radius);
  Run(f);
  return f.result(true);
}

// --- match_anchors, atss_assign ----------------------------------------------

// anchors [N, 4] and gt_boxes [G, 4] in the compute dtype, contiguous, and the two
// outputs both ops fill: a GT index [N] int64 and a value [N] (the best or the
// assigned IoU), uninitialised.
struct AssignProblem {
  at::ScalarType out_dtype, dtype;
  at::Tensor anchors, gts, index, value;
  int64_t n, m;

  // Every anchor background until assigned: index -1, value 0.
  void clear() {
    index.fill_(-1);
    value.zero_();
  }
  // (index, value), the value in the promoted dtype of anchors and gt_boxes.
  std::tuple<at::Tensor, at::Tensor> result() const {
    return {index, value.scalar_type() == out_dtype ? value : value.to(out_dtype)};
  }
  std::tuple<at::Tensor, at::Tensor> background() {
    clear();
    return result();
  }
};

inline AssignProblem prepare_assign(const at::Tensor& anchors, const at::Tensor& gt_boxes) {
  AssignProblem a;
  a.out_dtype = at::promote_types(anchors.scalar_type(), gt_boxes.scalar_type());
  a.dtype = compute_dtype(a.out_dtype);
  a.anchors = anchors.to(a.dtype).contiguous();
  a.gts = gt_boxes.to(a.dtype).contiguous();
  a.n = a.anchors.size(0);
  a.m = a.gts.size(0);
  a.index = at::empty({a.n}, a.anchors.options().dtype(at::kLong));
  a.value = at::empty({a.n}, a.anchors.options());
  return a;
}

inline AssignProblem prepare_match_anchors(const at::Tensor& anchors, const at::Tensor& gt_boxes, double high,
                                           double low) {
  check_match_inputs(anchors, gt_boxes, high, low, "match_anchors");
  return prepare_assign(anchors, gt_boxes);
}

inline AssignProblem prepare_atss_assign(const at::Tensor& anchors, at::IntArrayRef per_level,
                                         const at::Tensor& gt_boxes, int64_t topk) {
  check_atss_inputs(anchors, per_level, gt_boxes, topk, "atss_assign");
  return prepare_assign(anchors, gt_boxes);
}

// --- sigmoid_focal_loss -------------------------------------------------------

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

enum class Reduction { None, Mean, Sum };

inline Reduction parse_reduction(c10::string_view r, const char* op) {
  if (r == "none") return Reduction::None;
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  TORCH_CHECK_VALUE(false, op, ": expected reduction \"none\", \"mean\" or \"sum\", got \"", std::string(r), "\"");
  return Reduction::None;
}

// Logits and targets in the compute dtype (the promoted one; half types in
// float32), contiguous; with the upstream gradient for the backward.
struct FocalProblem {
  at::ScalarType out_dtype, dtype;
  Reduction reduction;
  at::Tensor x, t, grad;
  int64_t n;
};

inline FocalProblem prepare_focal(const at::Tensor& inputs, const at::Tensor& targets, double alpha, double gamma,
                                  c10::string_view reduction) {
  const char* op = "sigmoid_focal_loss";
  check_sigmoid_focal_loss_inputs(inputs, targets, alpha, gamma, op);
  FocalProblem f;
  f.reduction = parse_reduction(reduction, op);
  f.out_dtype = at::promote_types(inputs.scalar_type(), targets.scalar_type());
  f.dtype = compute_dtype(f.out_dtype);
  f.x = inputs.to(f.dtype).contiguous();
  f.t = targets.to(f.dtype).contiguous();
  f.n = f.x.numel();
  return f;
}

inline FocalProblem prepare_focal_backward(const at::Tensor& grad, const at::Tensor& inputs,
                                           const at::Tensor& targets, double alpha, double gamma,
                                           c10::string_view reduction) {
  const char* op = "sigmoid_focal_loss_backward";
  check_sigmoid_focal_loss_inputs(inputs, targets, alpha, gamma, op);
  FocalProblem f;
  f.reduction = parse_reduction(reduction, op);
  check_float(grad, op, "grad");
  check_same_device(inputs, "inputs", grad, "grad", op);
  if (f.reduction == Reduction::None) {
    TORCH_CHECK_VALUE(grad.sizes() == inputs.sizes(), op, ": expected grad of shape ", inputs.sizes(),
                      ", got shape ", grad.sizes());
  } else {
    TORCH_CHECK_VALUE(grad.numel() == 1, op, ": expected a one-element grad for a reduced loss, got shape ",
                      grad.sizes());
  }
  f.out_dtype = at::promote_types(inputs.scalar_type(), targets.scalar_type());
  f.dtype = compute_dtype(f.out_dtype);
  f.x = inputs.to(f.dtype).contiguous();
  f.t = targets.to(f.dtype).contiguous();
  f.grad = grad.to(f.dtype).contiguous();
  f.n = f.x.numel();
  return f;
}

}  // namespace nasx::ops
