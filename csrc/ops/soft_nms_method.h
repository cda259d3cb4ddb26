// Parsing of soft_nms's `method` argument, shared by both backends.
#pragma once

#include <c10/util/Exception.h>
#include <string_view>

namespace nasx::ops {

enum class SoftNmsMethod { kLinear, kGaussian };

inline SoftNmsMethod parse_soft_nms_method(std::string_view method) {
  if (method == "gaussian") return SoftNmsMethod::kGaussian;
  if (method == "linear") return SoftNmsMethod::kLinear;
  TORCH_CHECK_VALUE(false, "soft_nms: expected method \"gaussian\" or \"linear\", got \"", method, "\"");
}

inline void check_soft_nms_args(double iou_threshold, double sigma, double score_threshold) {
  TORCH_CHECK_VALUE(!std::isnan(iou_threshold), "soft_nms: iou_threshold must be a number, got nan");
  TORCH_CHECK_VALUE(sigma > 0, "soft_nms: expected sigma > 0, got ", sigma);
  TORCH_CHECK_VALUE(!std::isnan(score_threshold), "soft_nms: score_threshold must be a number, got nan");
}

}  // namespace nasx::ops
