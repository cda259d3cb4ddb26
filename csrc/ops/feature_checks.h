// Input validation of the feature-map ops (roi_align, deform_conv2d), shared by
// both backends. Messages name the op, the argument, what was expected and what
// came; the exception types map to Python's TypeError / ValueError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <limits>

namespace nasx::ops {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.is_floating_point(), op, ": expected ", name,
                   " to be a floating-point tensor (float16, bfloat16, float32 or float64), got ", t.scalar_type());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": expected ", name, " of shape ", layout, ", got shape ", t.sizes());
}

inline void check_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                         const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": expected all tensors on one device, got ", a_name, " on ",
                    a.device(), " and ", b_name, " on ", b.device());
}

inline void check_positive(int64_t v, const char* op, const char* name) {
  TORCH_CHECK_VALUE(v > 0, op, ": expected ", name, " > 0, got ", v);
}

// Kernels index inside one feature plane with 32-bit integers (and everything
// across planes with 64-bit ones).
inline void check_plane(int64_t height, int64_t width, const char* op) {
  TORCH_CHECK_VALUE(height * width <= std::numeric_limits<int32_t>::max(), op,
                    ": a feature plane of ", height, " x ", width, " exceeds 2^31 elements");
}

// float16/bfloat16 feature maps are computed in float32 and the result cast back.
inline at::ScalarType feature_compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace nasx::ops
