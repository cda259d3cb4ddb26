// CUDA kernel of partial_order_prune; same rule as the CPU kernel.
// The evaluated set is sorted by accuracy on the device, so one thread per
// candidate scans it in that order and stops at the first b with a <= b (its
// accuracy is ub(a)); every thread of a warp reads the same row, so loads
// broadcast. The best accuracy within the candidate's cost comes from a binary
// search over the evaluated costs, sorted, with a running maximum of accuracy.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda/std/limits>

#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

__global__ void prune_kernel(const int64_t* __restrict__ cand, const double* __restrict__ cand_cost, int64_t k,
                             int64_t dims, const int64_t* __restrict__ ev, const double* __restrict__ acc_sorted,
                             int64_t n, const double* __restrict__ cost_sorted, const double* __restrict__ best_acc,
                             bool* __restrict__ pruned) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= k) return;
  // Evaluated architectures with cost <= cost(a): upper bound in the sorted costs.
  const double c = cand_cost[i];
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (cost_sorted[mid] <= c) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) {
    pruned[i] = false;
    return;
  }
  const double best = best_acc[lo - 1];
  const int64_t* a = cand + i * dims;
  double ub = ::cuda::std::numeric_limits<double>::infinity();
  for (int64_t b = 0; b < n; ++b) {
    const int64_t* e = ev + b * dims;
    bool le = true;
    for (int64_t d = 0; d < dims && le; ++d) le = a[d] <= e[d];
    if (le) {
      ub = acc_sorted[b];
      break;
    }
  }
  pruned[i] = best >= ub;
}

at::Tensor partial_order_prune_cuda(const at::Tensor& candidates, const at::Tensor& candidate_cost,
                                    const at::Tensor& evaluated, const at::Tensor& evaluated_cost,
                                    const at::Tensor& evaluated_acc) {
  check_prune_inputs(candidates, candidate_cost, evaluated, evaluated_cost, evaluated_acc);
  c10::cuda::CUDAGuard guard(candidates.device());
  const int64_t k = candidates.size(0), dims = candidates.size(1), n = evaluated.size(0);
  auto out = at::zeros({k}, candidates.options().dtype(at::kBool));
  if (k == 0 || n == 0) return out;
  const auto acc = evaluated_acc.to(at::kDouble);
  const auto cost = evaluated_cost.to(at::kDouble);
  const auto by_acc = std::get<1>(acc.sort(/*stable=*/true, 0, false));
  const auto ev = evaluated.to(at::kLong).index_select(0, by_acc).contiguous();
  const auto acc_sorted = acc.index_select(0, by_acc).contiguous();
  const auto by_cost = std::get<1>(cost.sort(/*stable=*/true, 0, false));
  const auto cost_sorted = cost.index_select(0, by_cost).contiguous();
  const auto best_acc = std::get<0>(acc.index_select(0, by_cost).cummax(0)).contiguous();
  const auto cand = candidates.to(at::kLong).contiguous();
  const auto cand_cost = candidate_cost.to(at::kDouble).contiguous();
  const unsigned blocks = static_cast<unsigned>((k + kThreads - 1) / kThreads);
  prune_kernel<<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      cand.const_data_ptr<int64_t>(), cand_cost.const_data_ptr<double>(), k, dims, ev.const_data_ptr<int64_t>(),
      acc_sorted.const_data_ptr<double>(), n, cost_sorted.const_data_ptr<double>(), best_acc.const_data_ptr<double>(),
      out.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) { m.impl("partial_order_prune", &partial_order_prune_cuda); }

}  // namespace nasx::ops
