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

// A floating-point [n] on the device of `like`, without NaN (costs, accuracies).
inline void check_values(const at::Tensor& t, int64_t n, const at::Tensor& like, const char* like_name, const char* op,
                         const char* name, const char* n_means) {
  check_float(t, op, name);
  check_vector(t, n, op, name, n_means);
  check_same_device(like, like_name, t, name, op);
  check_no_nan(t, op, name);
}

// crowding_distance(objectives [N, M], ranks [N]); NaN: see check_no_nan.
inline void check_crowding_inputs(const at::Tensor& objectives, const at::Tensor& ranks) {
  const char* op = "crowding_distance";
  check_objectives(objectives, op, "objectives");
  check_integer(ranks, op, "ranks");
  check_vector(ranks, objectives.size(0), op, "ranks", "N");
  check_same_device(objectives, "objectives", ranks, "ranks", op);
}

// partial_order_prune(candidates [K, D] int, candidate_cost [K], evaluated [N, D] int,
// evaluated_cost [N], evaluated_acc [N]), NaN included.
inline void check_prune_inputs(const at::Tensor& candidates, const at::Tensor& candidate_cost,
                               const at::Tensor& evaluated, const at::Tensor& evaluated_cost,
                               const at::Tensor& evaluated_acc) {
  const char* op = "partial_order_prune";
  check_integer(candidates, op, "candidates");
  TORCH_CHECK_VALUE(candidates.dim() == 2, op, ": expected candidates of shape [K, D], got shape ",
                    candidates.sizes());
  check_integer(evaluated, op, "evaluated");
  TORCH_CHECK_VALUE(evaluated.dim() == 2 && evaluated.size(1) == candidates.size(1), op,
                    ": expected evaluated of shape [N, D] with D = candidates.size(1) = ", candidates.size(1),
                    ", got shape ", evaluated.sizes());
  check_same_device(candidates, "candidates", evaluated, "evaluated", op);
  check_values(candidate_cost, candidates.size(0), candidates, "candidates", op, "candidate_cost", "K");
  check_values(evaluated_cost, evaluated.size(0), candidates, "candidates", op, "evaluated_cost", "N");
  check_values(evaluated_acc, evaluated.size(0), candidates, "candidates", op, "evaluated_acc", "N");
}

}  // namespace nasx::ops
