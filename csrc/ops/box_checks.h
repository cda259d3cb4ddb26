// Input validation shared by every box op and backend. Messages name the op,
// the argument, what was expected and what came; the exception types map to
// Python's TypeError / ValueError.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "ops/checks.h"

namespace nasx::ops {

inline void check_boxes(const at::Tensor& boxes, const char* op, const char* name) {
  TORCH_CHECK_TYPE(boxes.is_floating_point(), op, ": expected ", name,
                   " to be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
                   boxes.scalar_type());
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, op, ": expected ", name,
                    " of shape [N, 4] (x1, y1, x2, y2), got shape ", boxes.sizes());
}

inline void check_scores(const at::Tensor& scores, const at::Tensor& boxes, const char* op) {
  TORCH_CHECK_TYPE(scores.is_floating_point(), op,
                   ": expected scores to be a floating-point tensor, got ", scores.scalar_type());
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0), op,
                    ": expected scores of shape [N] with N = boxes.size(0) = ", boxes.size(0),
                    ", got shape ", scores.sizes());
}

inline void check_idxs(const at::Tensor& idxs, const at::Tensor& boxes, const char* op) {
  TORCH_CHECK_TYPE(!idxs.is_floating_point() && !idxs.is_complex() && idxs.scalar_type() != at::kBool, op,
                   ": expected idxs to be an integer tensor of category indices, got ", idxs.scalar_type());
  TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), op,
                    ": expected idxs of shape [N] with N = boxes.size(0) = ", boxes.size(0),
                    ", got shape ", idxs.sizes());
}

inline void check_threshold(double value, const char* name, const char* op) {
  TORCH_CHECK_VALUE(!std::isnan(value), op, ": ", name, " must be a number, got nan");
}

inline void check_pairwise_inputs(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  check_boxes(boxes1, op, "boxes1");
  check_boxes(boxes2, op, "boxes2");
  check_same_device(boxes1, "boxes1", boxes2, "boxes2", op);
}

// boxes + scores (+ idxs) of the NMS family.
inline void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor* idxs,
                             double iou_threshold, const char* op) {
  check_boxes(boxes, op, "boxes");
  check_scores(scores, boxes, op);
  check_same_device(boxes, "boxes", scores, "scores", op);
  check_threshold(iou_threshold, "iou_threshold", op);
  if (idxs) {
    check_idxs(*idxs, boxes, op);
    check_same_device(boxes, "boxes", *idxs, "idxs", op);
  }
}

// box_iou / generalized_box_iou: both box sets in the compute dtype, contiguous,
// and the [N, M] output to fill.
struct PairwiseProblem {
  at::ScalarType out_dtype;
  at::Tensor a, b, out;
  int64_t n, m;

  at::Tensor result() const { return out.scalar_type() == out_dtype ? out : out.to(out_dtype); }
};

inline PairwiseProblem prepare_pairwise(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  check_pairwise_inputs(boxes1, boxes2, op);
  PairwiseProblem p;
  p.out_dtype = at::promote_types(boxes1.scalar_type(), boxes2.scalar_type());
  const auto dtype = compute_dtype(p.out_dtype);
  p.a = boxes1.to(dtype).contiguous();
  p.b = boxes2.to(dtype).contiguous();
  p.n = p.a.size(0);
  p.m = p.b.size(0);
  p.out = at::empty({p.n, p.m}, p.a.options());
  return p;
}

}  // namespace nasx::ops
