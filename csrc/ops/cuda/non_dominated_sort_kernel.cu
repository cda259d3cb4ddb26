// CUDA kernel of non_dominated_sort, by peeling with dominator counts (Deb's fast
// non-dominated sort, with every pairwise test spread over the GPU):
// 1. count_dominators: one thread per point counts the points that dominate it
//    (all N x N tests at once; a warp reads the same dominator, so loads broadcast);
// 2. per front: collect_front gathers the points whose count reached 0 and gives
//    them the front's rank; release_front lowers each remaining point's count by the
//    number of new-front points that dominate it.
// The work is O(N^2 M) on the device; the host reads one count per front (how many
// points the front took), which tells when every point has a rank.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

// p dominates q: p <= q everywhere and p != q.
template <typename T>
__device__ __forceinline__ bool dominates(const T* __restrict__ p, const T* __restrict__ q, int64_t m) {
  bool strict = false;
  for (int64_t j = 0; j < m; ++j) {
    const T a = p[j], b = q[j];
    if (a > b) return false;
    strict |= a < b;
  }
  return strict;
}

template <typename T>
__global__ void count_dominators_kernel(const T* __restrict__ x, int64_t n, int64_t m, int32_t* __restrict__ count) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  const T* q = x + j * m;
  int32_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += dominates(x + i * m, q, m);
  count[j] = c;
}

__global__ void collect_front_kernel(const int32_t* __restrict__ count, int64_t n, int64_t front,
                                     int64_t* __restrict__ rank, int64_t* __restrict__ members,
                                     int32_t* __restrict__ size) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n || rank[j] >= 0 || count[j] != 0) return;
  rank[j] = front;
  members[atomicAdd(size, 1)] = j;
}

template <typename T>
__global__ void release_front_kernel(const T* __restrict__ x, int64_t n, int64_t m,
                                     const int64_t* __restrict__ members, int64_t size,
                                     const int64_t* __restrict__ rank, int32_t* __restrict__ count) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n || rank[j] >= 0) return;
  const T* q = x + j * m;
  int32_t c = 0;
  for (int64_t k = 0; k < size; ++k) c += dominates(x + members[k] * m, q, m);
  count[j] -= c;
}

at::Tensor non_dominated_sort_cuda(const at::Tensor& objectives_in) {
  const char* op = "non_dominated_sort";
  check_objectives(objectives_in, op, "objectives");
  c10::cuda::CUDAGuard guard(objectives_in.device());
  const int64_t n = objectives_in.size(0), m = objectives_in.size(1);
  auto rank = at::full({n}, -1, objectives_in.options().dtype(at::kLong));
  if (n == 0) return rank;
  check_no_nan(objectives_in, op, "objectives");
  TORCH_CHECK_VALUE(n < (int64_t{1} << 31), op, ": at most 2^31 - 1 points on CUDA, got ", n);
  const auto x = objectives_in.to(compute_dtype(objectives_in.scalar_type())).contiguous();
  auto count = at::empty({n}, x.options().dtype(at::kInt));
  auto members = at::empty({n}, x.options().dtype(at::kLong));
  auto size = at::zeros({1}, x.options().dtype(at::kInt));
  auto stream = at::cuda::getCurrentCUDAStream();
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "non_dominated_sort", [&] {
    const scalar_t* data = x.const_data_ptr<scalar_t>();
    count_dominators_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(data, n, m, count.mutable_data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    int64_t ranked = 0;
    for (int64_t front = 0; ranked < n; ++front) {
      size.zero_();
      collect_front_kernel<<<blocks, kThreads, 0, stream>>>(count.const_data_ptr<int32_t>(), n, front,
                                                            rank.mutable_data_ptr<int64_t>(),
                                                            members.mutable_data_ptr<int64_t>(),
                                                            size.mutable_data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t taken = size.item<int32_t>();  // the host must know when every point is ranked
      TORCH_CHECK(taken > 0, op, ": internal error, front ", front, " is empty with ", n - ranked, " points left");
      ranked += taken;
      if (ranked == n) break;
      release_front_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          data, n, m, members.const_data_ptr<int64_t>(), taken, rank.const_data_ptr<int64_t>(),
          count.mutable_data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return rank;
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) { m.impl("non_dominated_sort", &non_dominated_sort_cuda); }

}  // namespace nasx::ops
