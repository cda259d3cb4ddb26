// Argument checks of soft_nms, shared by both backends.
#pragma once

#include <c10/util/Exception.h>

#include <cmath>
#include <string_view>

#include "ops/box_checks.h"

namespace nasx::ops {

enum class SoftNmsMethod { kLinear, kGaussian };

inline SoftNmsMethod parse_soft_nms_method(std::string_view method) {
  if (method == "gaussian") return SoftNmsMethod::kGaussian;
  if (method == "linear") return SoftNmsMethod::kLinear;
  TORCH_CHECK_VALUE(false, "soft_nms: expected method \"gaussian\" or \"linear\", got \"", method, "\"");
}

// Validates every input and returns the parsed method.
inline SoftNmsMethod check_soft_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold,
                                           double sigma, double score_threshold, c10::string_view method) {
  check_nms_inputs(boxes, scores, nullptr, iou_threshold, "soft_nms");
  TORCH_CHECK_VALUE(sigma > 0, "soft_nms: expected sigma > 0, got ", sigma);
  check_threshold(score_threshold, "score_threshold", "soft_nms");
  return parse_soft_nms_method(std::string_view(method.data(), method.size()));
}

}  // namespace nasx::ops
