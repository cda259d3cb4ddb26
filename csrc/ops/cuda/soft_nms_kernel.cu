// CUDA kernel of Soft-NMS. Selection is sequential by definition, so one block
// runs the whole loop: a block-wide argmax (ties: lower index) picks the next
// box, then every thread decays its share of the remaining scores. Nothing
// leaves the GPU until the number of kept boxes is read at the end.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/soft_nms_checks.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return ::exp(x); }

// (s1, i1) ranks before (s2, i2): higher score, then lower index; i < 0 is "none".
template <typename T>
__device__ __forceinline__ bool better(T s1, int64_t i1, T s2, int64_t i2) {
  if (i1 < 0) return false;
  if (i2 < 0) return true;
  return s1 > s2 || (s1 == s2 && i1 < i2);
}

template <typename T>
__global__ void soft_nms_kernel(const T* __restrict__ boxes, T* __restrict__ scores, uint8_t* __restrict__ alive,
                                int64_t n, T iou_threshold, T sigma, T score_threshold, bool gaussian,
                                int64_t* __restrict__ keep, T* __restrict__ kept_scores,
                                int64_t* __restrict__ num_keep) {
  __shared__ T warp_best[kThreads / 32];
  __shared__ int64_t warp_idx[kThreads / 32];
  __shared__ int64_t selected;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t j = tid; j < n; j += blockDim.x) {
    const T s = scores[j];
    alive[j] = !isnan(s) && s >= score_threshold;
  }
  __syncthreads();
  int64_t count = 0;
  while (true) {
    T best = T(0);
    int64_t bi = -1;
    for (int64_t j = tid; j < n; j += blockDim.x) {
      if (alive[j] && better(scores[j], j, best, bi)) {
        best = scores[j];
        bi = j;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const T os = __shfl_down_sync(0xffffffffu, best, off);
      const int64_t oi = __shfl_down_sync(0xffffffffu, bi, off);
      if (better(os, oi, best, bi)) {
        best = os;
        bi = oi;
      }
    }
    if (lane == 0) {
      warp_best[warp] = best;
      warp_idx[warp] = bi;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
        if (better(warp_best[w], warp_idx[w], best, bi)) {
          best = warp_best[w];
          bi = warp_idx[w];
        }
      }
      selected = bi;
      if (bi >= 0) {
        keep[count] = bi;
        kept_scores[count] = best;
      }
    }
    __syncthreads();
    const int64_t sel = selected;
    if (sel < 0) break;
    ++count;
    const T sx1 = boxes[4 * sel], sy1 = boxes[4 * sel + 1], sx2 = boxes[4 * sel + 2], sy2 = boxes[4 * sel + 3];
    const T sa = box_area(sx1, sy1, sx2, sy2);
    for (int64_t j = tid; j < n; j += blockDim.x) {
      if (!alive[j]) continue;
      if (j == sel) {
        alive[j] = 0;
        continue;
      }
      const T bx1 = boxes[4 * j], by1 = boxes[4 * j + 1], bx2 = boxes[4 * j + 2], by2 = boxes[4 * j + 3];
      T o = iou(sx1, sy1, sx2, sy2, sa, bx1, by1, bx2, by2, box_area(bx1, by1, bx2, by2));
      if (!(o > T(0))) o = T(0);  // NaN IoU (non-finite coordinates) means no overlap
      const T w = gaussian ? exp_(-mul_rn(o, o) / sigma) : (o > iou_threshold ? T(1) - o : T(1));
      const T s = mul_rn(scores[j], w);
      scores[j] = s;
      if (s < score_threshold) alive[j] = 0;
    }
    __syncthreads();
  }
  if (tid == 0) *num_keep = count;
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cuda(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                                                 double iou_threshold, double sigma, double score_threshold,
                                                 c10::string_view method_name) {
  const auto method =
      check_soft_nms_inputs(boxes_in, scores_in, iou_threshold, sigma, score_threshold, method_name);
  c10::cuda::CUDAGuard guard(boxes_in.device());
  const auto dtype = compute_dtype(at::promote_types(boxes_in.scalar_type(), scores_in.scalar_type()));
  const auto boxes = boxes_in.to(dtype).contiguous();
  auto scores = scores_in.to(dtype).clone(at::MemoryFormat::Contiguous);  // decayed in place
  const int64_t n = boxes.size(0);
  auto keep = at::empty({n}, boxes.options().dtype(at::kLong));
  auto kept_scores = at::empty({n}, scores.options());
  if (n == 0) return {keep, kept_scores.to(scores_in.scalar_type())};
  auto alive = at::empty({n}, boxes.options().dtype(at::kByte));
  auto num_keep = at::empty({1}, boxes.options().dtype(at::kLong));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "soft_nms", [&] {
    soft_nms_kernel<scalar_t><<<1, kThreads, 0, stream>>>(
        boxes.const_data_ptr<scalar_t>(), scores.mutable_data_ptr<scalar_t>(), alive.mutable_data_ptr<uint8_t>(), n,
        static_cast<scalar_t>(iou_threshold), static_cast<scalar_t>(sigma), static_cast<scalar_t>(score_threshold),
        method == SoftNmsMethod::kGaussian, keep.mutable_data_ptr<int64_t>(), kept_scores.mutable_data_ptr<scalar_t>(),
        num_keep.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const int64_t k = num_keep.item<int64_t>();
  return {keep.narrow(0, 0, k), kept_scores.narrow(0, 0, k).to(scores_in.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("soft_nms", &soft_nms_cuda);
}

}  // namespace nasx::ops
