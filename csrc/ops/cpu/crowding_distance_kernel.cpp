// CPU kernel of crowding_distance: NSGA-II's crowding distance within each front,
// exactly as pymoo's "cd" (RankAndCrowding) computes it on the front's points in
// increasing index order: fronts of one or two points get +inf; otherwise, per
// objective, the points sorted stably by value, each gets
//   (v[k] - v[k-1]) / norm + (v[k+1] - v[k]) / norm,   v[-1] = -inf, v[K] = +inf,
// norm = max - min of the front (0 -> NaN), NaN terms -> 0; the M terms are summed
// in numpy's order and divided by M. All in float64, as pymoo does.
// Fronts and objectives are independent tasks spread over the threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/pareto_checks.h"
#include "ops/pareto_sum.h"

namespace nasx::ops {
namespace {

// Terms of objective j for the front `members` (increasing indices), into terms[i * m + j].
void front_terms(const double* x, int64_t m, int64_t j, const int64_t* members, int64_t size, double* terms) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  std::vector<int64_t> order(members, members + size);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a * m + j] < x[b * m + j]; });
  double norm = x[order[size - 1] * m + j] - x[order[0] * m + j];
  if (norm == 0) norm = std::numeric_limits<double>::quiet_NaN();
  for (int64_t k = 0; k < size; ++k) {
    const double v = x[order[k] * m + j];
    double last = (v - (k > 0 ? x[order[k - 1] * m + j] : -inf)) / norm;
    double next = ((k + 1 < size ? x[order[k + 1] * m + j] : inf) - v) / norm;
    if (std::isnan(last)) last = 0;
    if (std::isnan(next)) next = 0;
    terms[order[k] * m + j] = last + next;
  }
}

at::Tensor crowding_distance_cpu(const at::Tensor& objectives_in, const at::Tensor& ranks_in) {
  check_crowding_inputs(objectives_in, ranks_in);
  check_no_nan(objectives_in, "crowding_distance", "objectives");
  const auto x_t = objectives_in.to(at::kDouble).contiguous();
  const auto r_t = ranks_in.to(at::kLong).contiguous();
  const int64_t n = x_t.size(0), m = x_t.size(1);
  const double* x = x_t.const_data_ptr<double>();
  const int64_t* rank = r_t.const_data_ptr<int64_t>();
  // Group by rank; each front's members stay in increasing index order.
  std::vector<int64_t> members(n);
  std::iota(members.begin(), members.end(), 0);
  std::stable_sort(members.begin(), members.end(), [rank](int64_t a, int64_t b) { return rank[a] < rank[b]; });
  std::vector<std::pair<int64_t, int64_t>> fronts;  // (begin, size)
  for (int64_t b = 0; b < n;) {
    int64_t e = b + 1;
    while (e < n && rank[members[e]] == rank[members[b]]) ++e;
    fronts.emplace_back(b, e - b);
    b = e;
  }
  std::vector<double> terms(n * m);
  std::vector<std::pair<int64_t, int64_t>> tasks;  // (front, objective)
  for (int64_t f = 0; f < static_cast<int64_t>(fronts.size()); ++f) {
    if (fronts[f].second <= 2) continue;
    for (int64_t j = 0; j < m; ++j) tasks.emplace_back(f, j);
  }
  // Largest fronts first, so that one big front does not finish last on one thread.
  std::stable_sort(tasks.begin(), tasks.end(),
                   [&](auto& a, auto& b) { return fronts[a.first].second > fronts[b.first].second; });
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const auto [f, j] = tasks[t];
      front_terms(x, m, j, members.data() + fronts[f].first, fronts[f].second, terms.data());
    }
  });
  auto out = at::empty({n}, x_t.options());
  double* cd = out.mutable_data_ptr<double>();
  for (const auto& [b, size] : fronts) {
    for (int64_t k = b; k < b + size; ++k) {
      const int64_t i = members[k];
      cd[i] = size <= 2 ? std::numeric_limits<double>::infinity() : pairwise_sum(&terms[i * m], m, 1) / m;
    }
  }
  return out.to(compute_dtype(objectives_in.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) { m.impl("crowding_distance", &crowding_distance_cpu); }

}  // namespace nasx::ops
