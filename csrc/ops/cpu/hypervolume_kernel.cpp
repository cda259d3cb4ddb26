// CPU kernel of hypervolume: the Lebesgue measure of the region dominated by the
// points and bounded by the reference point (minimisation), computed in float64.
//
// Only points strictly better than the reference in every objective contribute.
//   M = 1  r - min;
//   M = 2  sweep in f0 keeping the lowest f1: O(N log N);
//   M = 3  HV3D: sweep in f2, keeping the (f0, f1) staircase and its area in an
//          ordered map, each insertion adding the area it newly covers: O(N log N);
//   M >= 4 slicing in the WFG manner (While et al. 2012): with the points in
//          decreasing order of the last objective, point i adds
//          (r_last - p_i,last) * (the (M-1)-D volume p_i covers that the later
//          points do not), i.e. its inclusive (M-1)-D volume less the volume of the
//          later points limited to p_i (non-dominated ones only). The terms are
//          independent and summed over threads; recursion ends in HV3D.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <vector>

#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

// Points of d coordinates, row-major.
struct PointSet {
  int64_t d;
  std::vector<double> x;
  int64_t size() const { return static_cast<int64_t>(x.size()) / d; }
  const double* row(int64_t i) const { return x.data() + i * d; }
};

double hv_1d(const PointSet& s, const double* ref) {
  double lo = ref[0];
  for (int64_t i = 0; i < s.size(); ++i) lo = std::min(lo, s.row(i)[0]);
  return ref[0] - lo;
}

double hv_2d(const PointSet& s, const double* ref) {
  std::vector<int64_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const double *p = s.row(a), *q = s.row(b);
    return p[0] < q[0] || (p[0] == q[0] && p[1] < q[1]);
  });
  double area = 0, low = ref[1];
  for (int64_t i : order) {
    const double* p = s.row(i);
    if (p[1] < low) {
      area += (ref[0] - p[0]) * (low - p[1]);
      low = p[1];
    }
  }
  return area;
}

double hv_3d(const PointSet& s, const double* ref) {
  const int64_t n = s.size();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s.row(a)[2] < s.row(b)[2]; });
  std::map<double, double> steps;  // f0 increasing -> f1 decreasing
  double area = 0, volume = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double* p = s.row(order[k]);
    const double x = p[0], y = p[1];
    auto at_or_before = steps.upper_bound(x);
    const bool covered = at_or_before != steps.begin() && std::prev(at_or_before)->second <= y;
    if (!covered) {
      auto it = steps.lower_bound(x);
      double height = it == steps.begin() ? ref[1] : std::prev(it)->second;  // staircase level left of x
      double from = x;
      while (it != steps.end() && it->second >= y) {  // steps that p covers
        area += (it->first - from) * (height - y);
        height = it->second;
        from = it->first;
        it = steps.erase(it);
      }
      area += ((it == steps.end() ? ref[0] : it->first) - from) * (height - y);
      steps.emplace_hint(it, x, y);
    }
    const double next = k + 1 < n ? s.row(order[k + 1])[2] : ref[2];
    volume += area * (next - p[2]);
  }
  return volume;
}

// Drop dominated and repeated points (minimisation).
PointSet nondominated(const PointSet& s) {
  const int64_t n = s.size(), d = s.d;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Lexicographic order: a dominator always comes first.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::lexicographical_compare(s.row(a), s.row(a) + d, s.row(b), s.row(b) + d);
  });
  PointSet out{d, {}};
  for (int64_t i : order) {
    const double* p = s.row(i);
    bool dominated = false;
    for (int64_t k = 0; k < out.size() && !dominated; ++k) {
      const double* q = out.row(k);
      bool le = true;
      for (int64_t j = 0; j < d && le; ++j) le = q[j] <= p[j];
      dominated = le;  // also drops exact repeats
    }
    if (!dominated) out.x.insert(out.x.end(), p, p + d);
  }
  return out;
}

double hv_rec(const PointSet& s, const double* ref, bool parallel);

// Volume that point i of `sorted` (decreasing last objective) adds to the later ones.
double slice_term(const PointSet& sorted, int64_t i, const double* ref) {
  const int64_t d = sorted.d, n = sorted.size(), e = d - 1;
  const double* p = sorted.row(i);
  double incl = 1;
  for (int64_t j = 0; j < e; ++j) incl *= ref[j] - p[j];
  PointSet limited{e, {}};
  limited.x.reserve((n - i - 1) * e);
  for (int64_t k = i + 1; k < n; ++k) {
    const double* q = sorted.row(k);
    for (int64_t j = 0; j < e; ++j) limited.x.push_back(std::max(p[j], q[j]));
  }
  const double excl = incl - (limited.size() ? hv_rec(e >= 4 ? nondominated(limited) : limited, ref, false) : 0.0);
  return (ref[e] - p[e]) * excl;
}

double hv_rec(const PointSet& s, const double* ref, bool parallel) {
  const int64_t n = s.size(), d = s.d;
  if (n == 0) return 0;
  if (d == 1) return hv_1d(s, ref);
  if (d == 2) return hv_2d(s, ref);
  if (d == 3) return hv_3d(s, ref);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s.row(a)[d - 1] > s.row(b)[d - 1]; });
  PointSet sorted{d, std::vector<double>(n * d)};
  for (int64_t k = 0; k < n; ++k) std::copy(s.row(order[k]), s.row(order[k]) + d, sorted.x.begin() + k * d);
  std::vector<double> terms(n);
  auto run = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) terms[i] = slice_term(sorted, i, ref);
  };
  if (parallel && n > 64) {
    at::parallel_for(0, n, 4, run);
  } else {
    run(0, n);
  }
  double volume = 0;
  for (double t : terms) volume += t;
  return volume;
}

at::Tensor hypervolume_cpu(const at::Tensor& points_in, const at::Tensor& reference_in) {
  const char* op = "hypervolume";
  check_objectives(points_in, op, "points");
  check_float(reference_in, op, "reference");
  check_vector(reference_in, points_in.size(1), op, "reference", "M");
  check_same_device(points_in, "points", reference_in, "reference", op);
  check_no_nan(points_in, op, "points");
  check_no_nan(reference_in, op, "reference");
  const auto pts = points_in.to(at::kDouble).contiguous();
  const auto ref_t = reference_in.to(at::kDouble).contiguous();
  const int64_t n = pts.size(0), d = pts.size(1);
  const double* x = pts.const_data_ptr<double>();
  const double* ref = ref_t.const_data_ptr<double>();
  // Points that do not strictly dominate the reference cover nothing.
  PointSet s{d, {}};
  for (int64_t i = 0; i < n; ++i) {
    const double* p = x + i * d;
    bool inside = true;
    for (int64_t j = 0; j < d && inside; ++j) inside = p[j] < ref[j];
    if (inside) s.x.insert(s.x.end(), p, p + d);
  }
  const double volume = hv_rec(d >= 4 ? nondominated(s) : s, ref, /*parallel=*/true);
  const auto out_dtype = pareto_dtype(at::promote_types(points_in.scalar_type(), reference_in.scalar_type()));
  return at::scalar_tensor(volume, points_in.options().dtype(out_dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) { m.impl("hypervolume", &hypervolume_cpu); }

}  // namespace nasx::ops
