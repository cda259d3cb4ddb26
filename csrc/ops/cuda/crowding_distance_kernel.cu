// CUDA kernel of crowding_distance; the same arithmetic as the CPU kernel (pymoo's
// "cd", float64, numpy's summation order), so both agree to the bit.
// Per objective, two stable device sorts order the points by (rank, value, index);
// the bounds of each front's run come from a running max / min of run starts and
// ends, and one thread per point then writes its term. A last kernel sums each
// point's M terms. Nothing is read back to the host.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda/std/limits>

#include "ops/pareto_checks.h"
#include "ops/pareto_sum.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

// order: points by (rank, value, index); first / last: bounds of each position's front.
__global__ void terms_kernel(const double* __restrict__ v, const int64_t* __restrict__ order,
                             const int64_t* __restrict__ first, const int64_t* __restrict__ last, int64_t n,
                             int64_t m, int64_t j, double* __restrict__ terms, int64_t* __restrict__ front_size) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n) return;
  const double inf = ::cuda::std::numeric_limits<double>::infinity();
  const int64_t s = first[k], e = last[k], i = order[k];
  if (j == 0) front_size[i] = e - s + 1;
  double norm = v[order[e]] - v[order[s]];
  if (norm == 0) norm = ::cuda::std::numeric_limits<double>::quiet_NaN();
  const double x = v[i];
  double to_last = __ddiv_rn(x - (k > s ? v[order[k - 1]] : -inf), norm);
  double to_next = __ddiv_rn((k < e ? v[order[k + 1]] : inf) - x, norm);
  if (isnan(to_last)) to_last = 0;
  if (isnan(to_next)) to_next = 0;
  terms[i * m + j] = __dadd_rn(to_last, to_next);
}

__global__ void sum_kernel(const double* __restrict__ terms, const int64_t* __restrict__ front_size, int64_t n,
                           int64_t m, double* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  out[i] = front_size[i] <= 2 ? ::cuda::std::numeric_limits<double>::infinity()
                              : __ddiv_rn(pairwise_sum(terms + i * m, m, 1), static_cast<double>(m));
}

at::Tensor crowding_distance_cuda(const at::Tensor& objectives_in, const at::Tensor& ranks_in) {
  const char* op = "crowding_distance";
  check_crowding_inputs(objectives_in, ranks_in);
  c10::cuda::CUDAGuard guard(objectives_in.device());
  const int64_t n = objectives_in.size(0), m = objectives_in.size(1);
  const auto out_dtype = compute_dtype(objectives_in.scalar_type());
  if (n == 0) return at::empty({0}, objectives_in.options().dtype(out_dtype));
  check_no_nan(objectives_in, op, "objectives");
  const auto x = objectives_in.to(at::kDouble).contiguous();
  const auto rank = ranks_in.to(at::kLong).contiguous();
  auto terms = at::empty({n, m}, x.options());
  auto front_size = at::empty({n}, x.options().dtype(at::kLong));
  const auto positions = at::arange(n, rank.options());
  auto stream = at::cuda::getCurrentCUDAStream();
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  for (int64_t j = 0; j < m; ++j) {
    const auto v = x.select(1, j).contiguous();
    const auto by_value = std::get<1>(v.sort(/*stable=*/true, 0, false));
    const auto by_rank = std::get<1>(rank.index_select(0, by_value).sort(/*stable=*/true, 0, false));
    const auto order = by_value.index_select(0, by_rank).contiguous();
    const auto sorted_rank = rank.index_select(0, order);
    // Run starts (and ends) of equal ranks; a running max (min) carries them along the run.
    auto starts = at::ones({n}, rank.options().dtype(at::kBool));
    auto ends = at::ones({n}, rank.options().dtype(at::kBool));
    if (n > 1) {
      starts.narrow(0, 1, n - 1).copy_(sorted_rank.narrow(0, 1, n - 1).ne(sorted_rank.narrow(0, 0, n - 1)));
      ends.narrow(0, 0, n - 1).copy_(sorted_rank.narrow(0, 0, n - 1).ne(sorted_rank.narrow(0, 1, n - 1)));
    }
    const auto first = std::get<0>(at::where(starts, positions, 0).cummax(0)).contiguous();
    const auto last =
        std::get<0>(at::where(ends, positions, n).flip(0).cummin(0)).flip(0).contiguous();
    terms_kernel<<<blocks, kThreads, 0, stream>>>(v.const_data_ptr<double>(), order.const_data_ptr<int64_t>(),
                                                  first.const_data_ptr<int64_t>(), last.const_data_ptr<int64_t>(),
                                                  n, m, j, terms.mutable_data_ptr<double>(),
                                                  front_size.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  auto out = at::empty({n}, x.options());
  sum_kernel<<<blocks, kThreads, 0, stream>>>(terms.const_data_ptr<double>(), front_size.const_data_ptr<int64_t>(), n,
                                              m, out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) { m.impl("crowding_distance", &crowding_distance_cuda); }

}  // namespace nasx::ops
