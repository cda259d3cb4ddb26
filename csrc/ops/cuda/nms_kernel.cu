// CUDA kernels of nms and batched_nms.
//
// 1. Sort by score (stable, descending) on the device.
// 2. nms_mask_kernel: bit j of mask[i][j / 64] says that box i suppresses box j
//    (j after i, IoU > threshold, same category for batched_nms), upper triangle only.
// 3. nms_reduce_kernel: one block walks the 64-box column blocks in order. A warp
//    resolves the 64 boxes of a block against each other with shuffles, then all
//    threads OR the rows of the boxes just kept into the `removed` bitmap.
// Everything stays on the GPU; the only host sync is reading how many boxes were
// kept, which the output's size needs. Categories are compared in the mask kernel
// instead of torchvision's coordinate offsets, so large coordinates lose no precision.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/box_checks.h"
#include "ops/box_math.h"

namespace nasx::ops {
namespace {

constexpr int kBits = 64;

// Number of boxes in the 64-box block starting at `base`.
__device__ __forceinline__ int block_size(int64_t n, int64_t base) {
  return n - base < kBits ? static_cast<int>(n - base) : kBits;
}

template <typename T>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, const int64_t* __restrict__ cls, int64_t n, T thr,
                                uint64_t* __restrict__ mask, int64_t col_blocks) {
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) return;
  const int row_size = block_size(n, row_block * kBits);
  const int col_size = block_size(n, col_block * kBits);
  __shared__ T sx1[kBits], sy1[kBits], sx2[kBits], sy2[kBits], sarea[kBits];
  __shared__ int64_t scls[kBits];
  const int t = threadIdx.x;
  if (t < col_size) {
    const int64_t j = col_block * kBits + t;
    sx1[t] = boxes[4 * j];
    sy1[t] = boxes[4 * j + 1];
    sx2[t] = boxes[4 * j + 2];
    sy2[t] = boxes[4 * j + 3];
    sarea[t] = box_area(sx1[t], sy1[t], sx2[t], sy2[t]);
    scls[t] = cls ? cls[j] : 0;
  }
  __syncthreads();
  if (t >= row_size) return;
  const int64_t i = row_block * kBits + t;
  const T x1 = boxes[4 * i], y1 = boxes[4 * i + 1], x2 = boxes[4 * i + 2], y2 = boxes[4 * i + 3];
  const T area = box_area(x1, y1, x2, y2);
  const int64_t c = cls ? cls[i] : 0;
  uint64_t bits = 0;
  for (int j = (row_block == col_block) ? t + 1 : 0; j < col_size; ++j) {
    if (scls[j] != c) continue;
    if (iou(x1, y1, x2, y2, area, sx1[j], sy1[j], sx2[j], sy2[j], sarea[j]) > thr) bits |= 1ULL << j;
  }
  mask[i * col_blocks + col_block] = bits;
}

template <typename T>
__global__ void nms_reduce_kernel(const uint64_t* __restrict__ mask, const T* __restrict__ sorted_scores,
                                  int64_t n, int64_t col_blocks, uint64_t* __restrict__ removed,
                                  int64_t* __restrict__ keep, int64_t* __restrict__ num_keep) {
  __shared__ uint64_t kept_bits;
  __shared__ int64_t count;
  // NaN-scored boxes start out removed: they are never kept and suppress nothing.
  for (int64_t w = threadIdx.x; w < col_blocks; w += blockDim.x) {
    uint64_t r = 0;
    for (int b = 0; b < kBits; ++b) {
      const int64_t i = w * kBits + b;
      if (i < n && isnan(sorted_scores[i])) r |= 1ULL << b;
    }
    removed[w] = r;
  }
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (int64_t cb = 0; cb < col_blocks; ++cb) {
    const int64_t base = cb * kBits;
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      const int64_t r0 = base + lane, r1 = base + lane + 32;
      const uint64_t d0 = r0 < n ? mask[r0 * col_blocks + cb] : 0;
      const uint64_t d1 = r1 < n ? mask[r1 * col_blocks + cb] : 0;
      const int size = block_size(n, base);
      uint64_t rem = removed[cb];
      uint64_t kept = 0;
      for (int b = 0; b < size; ++b) {
        const uint64_t row = __shfl_sync(0xffffffffu, b < 32 ? d0 : d1, b & 31);
        if (!((rem >> b) & 1ULL)) {
          kept |= 1ULL << b;
          rem |= row;
        }
      }
      if (lane == 0) {
        kept_bits = kept;
        int64_t c = count;
        for (uint64_t bits = kept; bits; bits &= bits - 1) keep[c++] = base + (__ffsll(bits) - 1);
        count = c;
      }
    }
    __syncthreads();
    const uint64_t kb = kept_bits;
    for (int64_t w = cb + 1 + threadIdx.x; kb && w < col_blocks; w += blockDim.x) {
      uint64_t acc = 0;
      for (uint64_t bits = kb; bits; bits &= bits - 1) acc |= mask[(base + (__ffsll(bits) - 1)) * col_blocks + w];
      removed[w] |= acc;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *num_keep = count;
}

at::Tensor nms_cuda_impl(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor* idxs_in,
                         double iou_threshold, const char* op) {
  check_nms_inputs(boxes_in, scores_in, idxs_in, iou_threshold, op);
  c10::cuda::CUDAGuard guard(boxes_in.device());
  const int64_t n = boxes_in.size(0);
  if (n == 0) return at::empty({0}, boxes_in.options().dtype(at::kLong));
  const auto dtype = compute_dtype(at::promote_types(boxes_in.scalar_type(), scores_in.scalar_type()));
  const auto scores = scores_in.to(dtype);
  // Stable descending sort: equal scores keep the lower index first. NaN sorts first and is masked out.
  const auto order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto boxes = boxes_in.to(dtype).index_select(0, order).contiguous();
  const auto sorted_scores = scores.index_select(0, order).contiguous();
  at::Tensor cls;
  if (idxs_in) cls = idxs_in->to(at::kLong).index_select(0, order).contiguous();

  const int64_t col_blocks = (n + kBits - 1) / kBits;
  TORCH_CHECK_VALUE(col_blocks <= 65535, op, ": at most ", 65535 * kBits, " boxes per call on CUDA, got ", n);
  auto long_opts = boxes.options().dtype(at::kLong);
  auto mask = at::empty({n * col_blocks}, long_opts);
  auto removed = at::empty({col_blocks}, long_opts);
  auto keep = at::empty({n}, long_opts);
  auto num_keep = at::empty({1}, long_opts);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "nms", [&] {
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
    nms_mask_kernel<scalar_t><<<grid, kBits, 0, stream>>>(
        boxes.const_data_ptr<scalar_t>(), idxs_in ? cls.const_data_ptr<int64_t>() : nullptr, n,
        threshold_as<scalar_t>(iou_threshold), reinterpret_cast<uint64_t*>(mask.mutable_data_ptr<int64_t>()),
        col_blocks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    nms_reduce_kernel<scalar_t><<<1, 256, 0, stream>>>(
        reinterpret_cast<const uint64_t*>(mask.const_data_ptr<int64_t>()), sorted_scores.const_data_ptr<scalar_t>(),
        n, col_blocks, reinterpret_cast<uint64_t*>(removed.mutable_data_ptr<int64_t>()),
        keep.mutable_data_ptr<int64_t>(), num_keep.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const int64_t k = num_keep.item<int64_t>();  // the one sync: the output's size depends on the data
  return order.index_select(0, keep.narrow(0, 0, k));
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  return nms_cuda_impl(boxes, scores, nullptr, iou_threshold, "nms");
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  return nms_cuda_impl(boxes, scores, &idxs, iou_threshold, "batched_nms");
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace nasx::ops
