// Input validation shared by the Pareto ops on every backend. Messages name the
// op, the argument, what was expected and what came (TypeError / ValueError).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "ops/checks.h"

namespace nasx::ops {

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


}  // namespace nasx::ops
