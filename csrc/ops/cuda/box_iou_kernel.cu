// CUDA kernels of box_iou and generalized_box_iou: one thread per output pair,
// 64-bit indices (N x M can exceed 2^31).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/box_math.h"

namespace nasx::ops {
namespace {

template <typename T, bool Generalized>
__global__ void pairwise_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t n, int64_t m,
                                T* __restrict__ out) {
  const int64_t total = n * m;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total; k += stride) {
    const int64_t i = k / m, j = k - i * m;
    const T ax1 = a[4 * i], ay1 = a[4 * i + 1], ax2 = a[4 * i + 2], ay2 = a[4 * i + 3];
    const T bx1 = b[4 * j], by1 = b[4 * j + 1], bx2 = b[4 * j + 2], by2 = b[4 * j + 3];
    const T inter = intersection(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2);
    const T uni = box_area(ax1, ay1, ax2, ay2) + box_area(bx1, by1, bx2, by2) - inter;
    T v = inter / uni;
    if constexpr (Generalized) {
      const T w = clamp_min0((ax2 > bx2 ? ax2 : bx2) - (ax1 < bx1 ? ax1 : bx1));
      const T h = clamp_min0((ay2 > by2 ? ay2 : by2) - (ay1 < by1 ? ay1 : by1));
      const T enclosing = mul_rn(w, h);
      v = v - (enclosing - uni) / enclosing;
    }
    out[k] = v;
  }
}

template <bool Generalized>
at::Tensor pairwise_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  c10::cuda::CUDAGuard guard(boxes1.device());
  auto pr = prepare_pairwise(boxes1, boxes2, op);
  const int64_t n = pr.n, m = pr.m;
  if (n == 0 || m == 0) return pr.result();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n * m + threads - 1) / threads, 1 << 20);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pr.a.scalar_type(), "nasx_box_op", [&] {
    pairwise_kernel<scalar_t, Generalized><<<blocks, threads, 0, stream>>>(
        pr.a.const_data_ptr<scalar_t>(), pr.b.const_data_ptr<scalar_t>(), n, m, pr.out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return pr.result();
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_cuda<false>(boxes1, boxes2, "box_iou");
}

at::Tensor generalized_box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_cuda<true>(boxes1, boxes2, "generalized_box_iou");
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("box_iou", &box_iou_cuda);
  m.impl("generalized_box_iou", &generalized_box_iou_cuda);
}

}  // namespace nasx::ops
