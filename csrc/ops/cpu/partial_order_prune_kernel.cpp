// CPU kernel of partial_order_prune: SM-NAS's partial-order pruning (Li et al. 2019).
//
// a <= b when every descriptor component of a is <= b's; then acc(a) <= acc(b).
// ub(a) = min{acc(b) : b evaluated, a <= b} (+inf if none); a is pruned when some
// evaluated c has cost(c) <= cost(a) and acc(c) >= ub(a).
//
// Instead of testing all K x N pairs:
//  * the evaluated set is ordered by accuracy, and for every dimension d and every
//    distinct evaluated value u a bitset holds {b : b_d >= u}; the evaluated b with
//    a <= b are the AND of D bitsets (one binary search per dimension picks each),
//    and ub(a) is the accuracy of the lowest set bit -- found word by word, so the
//    scan usually stops in the first 64 evaluated architectures;
//  * max{acc(c) : cost(c) <= cost(a)} is a binary search in the evaluated costs
//    with a running maximum of accuracy.
// Candidates are independent and split over the threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

// For each dimension: the distinct evaluated values and, per value index, the
// bitset (in accuracy order) of the evaluated architectures at or above it.
struct UpSets {
  int64_t words;
  std::vector<std::vector<int64_t>> values;   // [D][distinct]
  std::vector<std::vector<uint64_t>> bits;    // [D][(distinct + 1) * words]; the last set is empty

  UpSets(const int64_t* ev, int64_t n, int64_t dims) : words((n + 63) / 64), values(dims), bits(dims) {
    at::parallel_for(0, dims, 1, [&](int64_t b, int64_t e) {
      for (int64_t d = b; d < e; ++d) build(ev, n, dims, d);
    });
  }

  void build(const int64_t* ev, int64_t n, int64_t dims, int64_t d) {
    auto& vals = values[d];
    for (int64_t i = 0; i < n; ++i) vals.push_back(ev[i * dims + d]);
    std::sort(vals.begin(), vals.end());
    vals.erase(std::unique(vals.begin(), vals.end()), vals.end());
    const int64_t u = static_cast<int64_t>(vals.size());
    auto& set = bits[d];
    set.assign((u + 1) * words, 0);
    // Mark each b at its own value, then OR downwards: set u holds b_d >= vals[u].
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = std::lower_bound(vals.begin(), vals.end(), ev[i * dims + d]) - vals.begin();
      set[v * words + i / 64] |= uint64_t{1} << (i % 64);
    }
    for (int64_t v = u - 2; v >= 0; --v) {
      for (int64_t w = 0; w < words; ++w) set[v * words + w] |= set[(v + 1) * words + w];
    }
  }

  // Index (in accuracy order) of the first evaluated b with a <= b, or n if none.
  int64_t first_above(const int64_t* a, int64_t dims, int64_t n, std::vector<const uint64_t*>& rows) const {
    for (int64_t d = 0; d < dims; ++d) {
      const auto& vals = values[d];
      const int64_t v = std::lower_bound(vals.begin(), vals.end(), a[d]) - vals.begin();
      rows[d] = bits[d].data() + v * words;
    }
    for (int64_t w = 0; w < words; ++w) {
      uint64_t x = w + 1 < words || n % 64 == 0 ? ~uint64_t{0} : (uint64_t{1} << (n % 64)) - 1;
      for (int64_t d = 0; d < dims && x; ++d) x &= rows[d][w];
      if (x) return w * 64 + __builtin_ctzll(x);
    }
    return n;
  }
};

at::Tensor partial_order_prune_cpu(const at::Tensor& candidates_in, const at::Tensor& candidate_cost_in,
                                   const at::Tensor& evaluated_in, const at::Tensor& evaluated_cost_in,
                                   const at::Tensor& evaluated_acc_in) {
  check_prune_inputs(candidates_in, candidate_cost_in, evaluated_in, evaluated_cost_in, evaluated_acc_in);
  const int64_t k = candidates_in.size(0), dims = candidates_in.size(1), n = evaluated_in.size(0);
  auto out = at::zeros({k}, candidates_in.options().dtype(at::kBool));
  if (k == 0 || n == 0) return out;
  const auto cand = candidates_in.to(at::kLong).contiguous();
  const auto ccost = candidate_cost_in.to(at::kDouble).contiguous();
  const auto acc_t = evaluated_acc_in.to(at::kDouble).contiguous();
  const auto cost_t = evaluated_cost_in.to(at::kDouble).contiguous();
  const double* acc = acc_t.const_data_ptr<double>();
  const double* cost = cost_t.const_data_ptr<double>();

  // Evaluated architectures in increasing accuracy.
  std::vector<int64_t> by_acc(n);
  std::iota(by_acc.begin(), by_acc.end(), 0);
  std::stable_sort(by_acc.begin(), by_acc.end(), [acc](int64_t a, int64_t b) { return acc[a] < acc[b]; });
  const auto ev_all = evaluated_in.to(at::kLong).contiguous();
  std::vector<int64_t> ev(n * dims);
  std::vector<double> acc_sorted(n);
  for (int64_t r = 0; r < n; ++r) {
    std::copy_n(ev_all.const_data_ptr<int64_t>() + by_acc[r] * dims, dims, ev.begin() + r * dims);
    acc_sorted[r] = acc[by_acc[r]];
  }
  const UpSets up(ev.data(), n, dims);

  // Evaluated costs in increasing order, with the best accuracy at or below each.
  std::vector<int64_t> by_cost(n);
  std::iota(by_cost.begin(), by_cost.end(), 0);
  std::sort(by_cost.begin(), by_cost.end(), [cost](int64_t a, int64_t b) { return cost[a] < cost[b]; });
  std::vector<double> cost_sorted(n), best_acc(n);
  for (int64_t r = 0; r < n; ++r) {
    cost_sorted[r] = cost[by_cost[r]];
    best_acc[r] = r == 0 ? acc[by_cost[r]] : std::max(best_acc[r - 1], acc[by_cost[r]]);
  }

  const int64_t* a = cand.const_data_ptr<int64_t>();
  const double* c = ccost.const_data_ptr<double>();
  bool* pruned = out.mutable_data_ptr<bool>();
  at::parallel_for(0, k, 2048, [&](int64_t b, int64_t e) {
    std::vector<const uint64_t*> rows(dims);
    for (int64_t i = b; i < e; ++i) {
      const int64_t cheaper = std::upper_bound(cost_sorted.begin(), cost_sorted.end(), c[i]) - cost_sorted.begin();
      if (cheaper == 0) continue;  // no evaluated architecture costs as little
      const int64_t first = up.first_above(a + i * dims, dims, n, rows);
      const double ub = first < n ? acc_sorted[first] : std::numeric_limits<double>::infinity();
      pruned[i] = best_acc[cheaper - 1] >= ub;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) { m.impl("partial_order_prune", &partial_order_prune_cpu); }

}  // namespace nasx::ops
