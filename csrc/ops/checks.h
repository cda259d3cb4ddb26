// Argument checks every op family shares, on every backend. Each message names
// the op, the argument, what was expected and what came; TORCH_CHECK_TYPE and
// TORCH_CHECK_VALUE map to Python's TypeError and ValueError. The family headers
// (box_checks.h, assign_checks.h, feature_checks.h, pareto_checks.h) build on these.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace nasx::ops {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.is_floating_point(), op, ": expected ", name,
                   " to be a floating-point tensor (float16, bfloat16, float32 or float64), got ", t.scalar_type());
}

inline void check_integer(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(!t.is_floating_point() && !t.is_complex() && t.scalar_type() != at::kBool, op, ": expected ",
                   name, " to be an integer tensor, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                              const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": expected all tensors on one device, got ", a_name, " on ",
                    a.device(), " and ", b_name, " on ", b.device());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": expected ", name, " of shape ", layout, ", got shape ", t.sizes());
}

inline void check_positive(int64_t v, const char* op, const char* name) {
  TORCH_CHECK_VALUE(v > 0, op, ": expected ", name, " > 0, got ", v);
}

// float16/bfloat16 inputs are computed in float32 (exactly: every half value is a
// float; pixel-box areas would overflow float16) and the results cast back.
inline at::ScalarType compute_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace nasx::ops
