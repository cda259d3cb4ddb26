// Input validation of the feature-map ops (roi_align, deform_conv2d), shared by
// both backends. Messages name the op, the argument, what was expected and what
// came; the exception types map to Python's TypeError / ValueError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <limits>

#include "ops/checks.h"

namespace nasx::ops {

// Kernels index inside one feature plane with 32-bit integers (and everything
// across planes with 64-bit ones).
inline void check_plane(int64_t height, int64_t width, const char* op) {
  TORCH_CHECK_VALUE(height * width <= std::numeric_limits<int32_t>::max(), op,
                    ": a feature plane of ", height, " x ", width, " exceeds 2^31 elements");
}

}  // namespace nasx::ops
