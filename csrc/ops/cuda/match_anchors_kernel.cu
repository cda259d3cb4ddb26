// CUDA kernels of match_anchors, mirroring the CPU kernel's two passes:
//   gt_best_kernel     one block per GT reduces its best IoU over all anchors
//                      (NaN-propagating, as torch.max), only with allow_low_quality_matches;
//   match_kernel       one thread per anchor scans the GTs (tiled through shared
//                      memory) for its best GT, its Matcher label and the low-quality rule.
// No G x N matrix, no host sync; 64-bit indices.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "ops/assign_checks.h"
#include "ops/assign_math.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T gt_anchor_iou(const T* g, T g_area, const T* a) {
  return iou(g[0], g[1], g[2], g[3], g_area, a[0], a[1], a[2], a[3], box_area(a[0], a[1], a[2], a[3]));
}

template <typename T>
__global__ void gt_best_kernel(const T* __restrict__ anchors, const T* __restrict__ gts, int64_t n,
                               T* __restrict__ gt_best) {
  __shared__ T best_s[kThreads];
  __shared__ bool nan_s[kThreads];
  const int64_t i = blockIdx.x;
  const T* g = gts + 4 * i;
  const T g_area = box_area(g[0], g[1], g[2], g[3]);
  T best = -INFINITY;
  bool nan = false;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const T v = gt_anchor_iou(g, g_area, anchors + 4 * j);
    nan |= is_nan(v);
    best = v > best ? v : best;
  }
  best_s[threadIdx.x] = best;
  nan_s[threadIdx.x] = nan;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      const T o = best_s[threadIdx.x + w];
      best_s[threadIdx.x] = o > best_s[threadIdx.x] ? o : best_s[threadIdx.x];
      nan_s[threadIdx.x] = nan_s[threadIdx.x] || nan_s[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) gt_best[i] = nan_s[0] ? T(NAN) : best_s[0];
}

template <typename T>
__global__ void match_kernel(const T* __restrict__ anchors, const T* __restrict__ gts, const T* __restrict__ gt_best,
                             int64_t n, int64_t m, T high, T low, bool allow_low_quality, int64_t* __restrict__ matched,
                             T* __restrict__ max_iou) {
  __shared__ T sx1[kThreads], sy1[kThreads], sx2[kThreads], sy2[kThreads], sarea[kThreads], sbest[kThreads];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = j < n;
  T ax1 = 0, ay1 = 0, ax2 = 0, ay2 = 0, a_area = 0;
  if (active) {
    ax1 = anchors[4 * j];
    ay1 = anchors[4 * j + 1];
    ax2 = anchors[4 * j + 2];
    ay2 = anchors[4 * j + 3];
    a_area = box_area(ax1, ay1, ax2, ay2);
  }
  T best = 0;
  int64_t arg = -1;
  bool low_quality = false;
  for (int64_t base = 0; base < m; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    if (i < m) {
      sx1[threadIdx.x] = gts[4 * i];
      sy1[threadIdx.x] = gts[4 * i + 1];
      sx2[threadIdx.x] = gts[4 * i + 2];
      sy2[threadIdx.x] = gts[4 * i + 3];
      sarea[threadIdx.x] = box_area(sx1[threadIdx.x], sy1[threadIdx.x], sx2[threadIdx.x], sy2[threadIdx.x]);
      sbest[threadIdx.x] = allow_low_quality ? gt_best[i] : T(NAN);
    }
    __syncthreads();
    const int count = m - base < kThreads ? static_cast<int>(m - base) : kThreads;
    if (active) {
      for (int k = 0; k < count; ++k) {
        const T v = iou(sx1[k], sy1[k], sx2[k], sy2[k], sarea[k], ax1, ay1, ax2, ay2, a_area);
        if (arg < 0 || replaces_max(v, best)) {
          best = v;
          arg = base + k;
        }
        low_quality |= v == sbest[k];
      }
    }
    __syncthreads();
  }
  if (!active) return;
  int64_t label = matcher_label(best, arg, high, low);
  if (allow_low_quality && label < 0 && low_quality) label = arg;
  matched[j] = label;
  max_iou[j] = best;
}

std::tuple<at::Tensor, at::Tensor> match_anchors_cuda(const at::Tensor& anchors_in, const at::Tensor& gt_in,
                                                      double high_threshold, double low_threshold,
                                                      bool allow_low_quality_matches) {
  c10::cuda::CUDAGuard guard(anchors_in.device());
  auto in = prepare_match_anchors(anchors_in, gt_in, high_threshold, low_threshold);
  if (in.m == 0) return in.background();
  const int64_t n = in.n, m = in.m;
  if (n > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    auto gt_best = at::empty({m}, in.anchors.options());
    AT_DISPATCH_FLOATING_TYPES(in.dtype, "match_anchors", [&] {
      if (allow_low_quality_matches) {
        TORCH_CHECK_VALUE(m <= 2147483647LL, "match_anchors: too many gt_boxes for one launch: ", m);
        gt_best_kernel<scalar_t><<<static_cast<unsigned>(m), kThreads, 0, stream>>>(
            in.anchors.const_data_ptr<scalar_t>(), in.gts.const_data_ptr<scalar_t>(), n, gt_best.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      const int64_t blocks = (n + kThreads - 1) / kThreads;
      match_kernel<scalar_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          in.anchors.const_data_ptr<scalar_t>(), in.gts.const_data_ptr<scalar_t>(), gt_best.const_data_ptr<scalar_t>(), n, m,
          static_cast<scalar_t>(high_threshold), static_cast<scalar_t>(low_threshold), allow_low_quality_matches,
          in.index.mutable_data_ptr<int64_t>(), in.value.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return in.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("match_anchors", &match_anchors_cuda);
}

}  // namespace nasx::ops
