// CUDA kernels of atss_assign, the same rule as the CPU kernel:
//   atss_candidates_kernel  one block per GT: per level, topk rounds of a block-wide
//                           arg-min over the level's anchors, each round taking the
//                           closest anchor after the previous one in (distance, index)
//                           order; then the IoU threshold (mean + unbiased std, double)
//                           and the centre-inside test mark the GT's positives;
//   claim_kernel            positives raise their anchor's best IoU (atomicMax on an
//                           order-preserving integer key of the IoU);
//   owner_kernel            positives holding that best IoU take the lowest GT index (atomicMin);
//   finish_kernel           writes -1 where no GT claimed the anchor.
// Memory O(N + G * topk * levels); 64-bit indices; no host sync.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/assign_math.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;
constexpr unsigned long long kNoOwner = ~0ULL;

template <typename T>
using KeyT = std::conditional_t<sizeof(T) == 4, unsigned int, unsigned long long>;

// Integer key with the order of the (non-NaN) float value; -0 counts as +0.
__device__ __forceinline__ unsigned int order_key(float v) {
  const unsigned int b = __float_as_uint(v + 0.0f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ unsigned long long order_key(double v) {
  const unsigned long long b = static_cast<unsigned long long>(__double_as_longlong(v + 0.0));
  return (b & 0x8000000000000000ULL) ? ~b : (b | 0x8000000000000000ULL);
}

template <typename T>
__global__ void atss_candidates_kernel(const T* __restrict__ anchors, const T* __restrict__ gts,
                                       const int64_t* __restrict__ level_begin, int64_t levels, int64_t topk,
                                       int64_t max_cands, T eps, int64_t* __restrict__ cand_anchor,
                                       T* __restrict__ cand_iou) {
  extern __shared__ unsigned char smem_raw[];
  int64_t* cands = reinterpret_cast<int64_t*>(smem_raw);
  __shared__ T red_d[kThreads];
  __shared__ int64_t red_i[kThreads];
  __shared__ int64_t count;
  __shared__ double threshold;
  const int64_t g = blockIdx.x;  // cand_iou rows are this block's own: written, then read after a barrier
  const T* b = gts + 4 * g;
  const T gcx = (b[0] + b[2]) / T(2), gcy = (b[1] + b[3]) / T(2);
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t lb = level_begin[l], le = level_begin[l + 1];
    const int64_t k = topk < le - lb ? topk : le - lb;
    T prev_d = 0;
    int64_t prev_i = -1;
    for (int64_t round = 0; round < k; ++round) {
      T best_d = 0;
      int64_t best_i = -1;
      for (int64_t j = lb + threadIdx.x; j < le; j += blockDim.x) {
        const T* a = anchors + 4 * j;
        const T d = centre_distance((a[0] + a[2]) / T(2), (a[1] + a[3]) / T(2), gcx, gcy);
        if (prev_i >= 0 && !closer(prev_d, prev_i, d, j)) continue;  // taken in an earlier round
        if (best_i < 0 || closer(d, j, best_d, best_i)) {
          best_d = d;
          best_i = j;
        }
      }
      red_d[threadIdx.x] = best_d;
      red_i[threadIdx.x] = best_i;
      __syncthreads();
      for (int w = kThreads / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) {
          const int64_t oi = red_i[threadIdx.x + w];
          if (oi >= 0 && (red_i[threadIdx.x] < 0 || closer(red_d[threadIdx.x + w], oi, red_d[threadIdx.x],
                                                          red_i[threadIdx.x]))) {
            red_d[threadIdx.x] = red_d[threadIdx.x + w];
            red_i[threadIdx.x] = oi;
          }
        }
        __syncthreads();
      }
      prev_d = red_d[0];
      prev_i = red_i[0];
      if (threadIdx.x == 0) cands[count++] = prev_i;
      __syncthreads();
    }
  }
  const int64_t c = count;
  const T g_area = box_area(b[0], b[1], b[2], b[3]);
  for (int64_t q = threadIdx.x; q < c; q += blockDim.x) {
    const T* a = anchors + 4 * cands[q];
    cand_iou[g * max_cands + q] =
        iou(a[0], a[1], a[2], a[3], box_area(a[0], a[1], a[2], a[3]), b[0], b[1], b[2], b[3], g_area);
  }
  __syncthreads();
  if (threadIdx.x == 0) threshold = atss_threshold(cand_iou + g * max_cands, c);
  __syncthreads();
  for (int64_t q = threadIdx.x; q < max_cands; q += blockDim.x) {
    int64_t out = -1;
    if (q < c) {
      const int64_t j = cands[q];
      const T* a = anchors + 4 * j;
      const T v = cand_iou[g * max_cands + q];
      const T cx = (a[0] + a[2]) / T(2), cy = (a[1] + a[3]) / T(2);
      if (static_cast<double>(v) >= threshold && cx - b[0] > eps && cy - b[1] > eps && b[2] - cx > eps &&
          b[3] - cy > eps) {
        out = j;
      }
    }
    cand_anchor[g * max_cands + q] = out;
  }
}

template <typename T>
__global__ void claim_kernel(const int64_t* __restrict__ cand_anchor, const T* __restrict__ cand_iou, int64_t total,
                             KeyT<T>* __restrict__ best) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= total || cand_anchor[q] < 0) return;
  atomicMax(best + cand_anchor[q], order_key(cand_iou[q]));
}

template <typename T>
__global__ void owner_kernel(const int64_t* __restrict__ cand_anchor, const T* __restrict__ cand_iou, int64_t total,
                             int64_t max_cands, const KeyT<T>* __restrict__ best,
                             unsigned long long* __restrict__ owner, T* __restrict__ assigned_iou) {
  const int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= total) return;
  const int64_t j = cand_anchor[q];
  if (j < 0 || order_key(cand_iou[q]) != best[j]) return;
  atomicMin(owner + j, static_cast<unsigned long long>(q / max_cands));
  assigned_iou[j] = cand_iou[q];  // every writer holds the same value
}

__global__ void finish_kernel(const unsigned long long* __restrict__ owner, int64_t n, int64_t* __restrict__ matched) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < n) matched[j] = owner[j] == kNoOwner ? -1 : static_cast<int64_t>(owner[j]);
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

std::tuple<at::Tensor, at::Tensor> atss_assign_cuda(const at::Tensor& anchors_in, at::IntArrayRef per_level,
                                                    const at::Tensor& gt_in, int64_t topk) {
  c10::cuda::CUDAGuard guard(anchors_in.device());
  auto in = prepare_atss_assign(anchors_in, per_level, gt_in, topk);
  if (in.n == 0 || in.m == 0) return in.background();
  in.value.zero_();  // claimed anchors get their IoU; finish_kernel writes every index
  const int64_t n = in.n, m = in.m;
  const auto& anchors = in.anchors;
  std::vector<int64_t> begin(per_level.size() + 1, 0);
  int64_t max_cands = 0;
  for (size_t l = 0; l < per_level.size(); ++l) {
    begin[l + 1] = begin[l] + per_level[l];
    max_cands += std::min<int64_t>(topk, per_level[l]);
  }
  TORCH_CHECK_VALUE(max_cands * static_cast<int64_t>(sizeof(int64_t)) <= 32768,
                    "atss_assign: at most 4096 candidates per GT on CUDA (topk x levels), got ", max_cands);
  auto level_begin = at::tensor(begin, at::kLong).to(anchors.device(), /*non_blocking=*/true);
  auto cand_anchor = at::empty({m * max_cands}, anchors.options().dtype(at::kLong));
  auto cand_iou = at::empty({m * max_cands}, anchors.options());
  auto owner = at::full({n}, -1, anchors.options().dtype(at::kLong));  // all ones: kNoOwner
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.dtype, "atss_assign", [&] {
    using T = scalar_t;
    auto best = at::zeros({n}, anchors.options().dtype(sizeof(T) == 4 ? at::kInt : at::kLong));  // below every key
    atss_candidates_kernel<T><<<static_cast<unsigned>(m), kThreads, max_cands * sizeof(int64_t), stream>>>(
        anchors.const_data_ptr<T>(), in.gts.const_data_ptr<T>(), level_begin.const_data_ptr<int64_t>(),
        static_cast<int64_t>(per_level.size()), topk, max_cands, static_cast<T>(kAtssInsideEps),
        cand_anchor.mutable_data_ptr<int64_t>(), cand_iou.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t total = m * max_cands;
    if (total == 0) return;
    auto* best_ptr = reinterpret_cast<KeyT<T>*>(best.mutable_data_ptr());
    claim_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(cand_anchor.const_data_ptr<int64_t>(),
                                                                cand_iou.const_data_ptr<T>(), total, best_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    owner_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        cand_anchor.const_data_ptr<int64_t>(), cand_iou.const_data_ptr<T>(), total, max_cands, best_ptr,
        reinterpret_cast<unsigned long long*>(owner.mutable_data_ptr<int64_t>()), in.value.mutable_data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  finish_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(owner.const_data_ptr<int64_t>()), n,
      in.index.mutable_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return in.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("atss_assign", &atss_assign_cuda);
}

}  // namespace nasx::ops
