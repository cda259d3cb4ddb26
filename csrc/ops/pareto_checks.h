// Input validation shared by the Pareto ops on every backend. Messages name the
// op, the argument, what was expected and what came (TypeError / ValueError).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace nasx::ops {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.is_floating_point(), op, ": expected ", name,
                   " to be a floating-point tensor (float16, bfloat16, float32 or float64), got ", t.scalar_type());
}

inline void check_integer(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(!t.is_floating_point() && !t.is_complex() && t.scalar_type() != at::kBool, op, ": expected ",
                   name, " to be an integer tensor, got ", t.scalar_type());
}

// objectives [N, M], M >= 1.
inline void check_objectives(const at::Tensor& t, const char* op, const char* name) {
  check_float(t, op, name);
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) >= 1, op, ": expected ", name,
                    " of shape [N, M] with M >= 1 objectives, got shape ", t.sizes());
}

inline void check_vector(const at::Tensor& t, int64_t n, const char* op, const char* name, const char* n_means) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, op, ": expected ", name, " of shape [", n_means, "] = [", n,
                    "], got shape ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name,
                              const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": expected all tensors on one device, got ", a_name, " on ",
                    a.device(), " and ", b_name, " on ", b.device());
}

// hypervolume(points [N, M], reference [M]) on every backend. NaN is checked where
// the values are read (the CPU kernel; the CUDA op runs it on a host copy).
inline void check_hypervolume_inputs(const at::Tensor& points, const at::Tensor& reference) {
  const char* op = "hypervolume";
  check_objectives(points, op, "points");
  check_float(reference, op, "reference");
  check_vector(reference, points.size(1), op, "reference", "M");
  check_same_device(points, "points", reference, "reference", op);
}

// NaN policy of every Pareto op: a NaN objective (or cost, accuracy, reference)
// has no place in an order, so it is rejected rather than given an arbitrary rank.
// On CUDA this reads one flag back to the host.
inline void check_no_nan(const at::Tensor& t, const char* op, const char* name) {
  if (t.numel() == 0) return;
  TORCH_CHECK_VALUE(!at::isnan(t).any().item<bool>(), op, ": ", name,
                    " contains NaN; Pareto ops need ordered values (drop or replace NaN rows first)");
}

// float16/bfloat16 are compared in float32 (exactly: every half value is a float).
inline at::ScalarType pareto_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace nasx::ops
