// CUDA kernels of fcos_targets and fcos_targets_batched: one thread per point,
// grid.y over images; the image's GTs pass through shared memory in tiles, and
// each thread keeps only its smallest-area candidate (O(P + G) memory, no P x G
// tensor). Same rule and arithmetic as the CPU kernel (fcos_math.h).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "ops/assign_checks.h"
#include "ops/fcos_math.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void fcos_targets_kernel(const T* __restrict__ points, const T* __restrict__ strides,
                                    const T* __restrict__ ranges, const T* __restrict__ gts,
                                    const bool* __restrict__ valid, int64_t P, int64_t G, bool center, T radius,
                                    int64_t* __restrict__ out_idx, T* __restrict__ out_reg,
                                    T* __restrict__ out_ctr) {
  __shared__ FcosGt<T> tile[kThreads];
  __shared__ bool tile_valid[kThreads];
  const int64_t image = blockIdx.y;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = p < P;
  T x = 0, y = 0, half = 0, lo = 0, hi = 0;
  if (active) {
    x = points[2 * p];
    y = points[2 * p + 1];
    half = fcos_half_size(strides[p], center, radius);
    lo = ranges[2 * p];
    hi = ranges[2 * p + 1];
  }
  const T* image_gts = gts + image * G * 4;
  int64_t best = -1;
  T best_area = T(0);
  for (int64_t base = 0; base < G; base += kThreads) {
    const int64_t g = base + threadIdx.x;
    if (g < G) {
      tile[threadIdx.x] = make_fcos_gt(image_gts + 4 * g);
      tile_valid[threadIdx.x] = valid == nullptr || valid[image * G + g];
    }
    __syncthreads();
    const int count = G - base < kThreads ? static_cast<int>(G - base) : kThreads;
    if (active) {
      for (int j = 0; j < count; ++j) {
        const FcosGt<T>& gt = tile[j];
        if (tile_valid[j] && (best < 0 || gt.area < best_area) && fcos_candidate(x, y, half, lo, hi, gt)) {
          best = base + j;
          best_area = gt.area;
        }
      }
    }
    __syncthreads();
  }
  if (!active) return;
  const int64_t k = image * P + p;
  out_idx[k] = best;
  if (best < 0) {
    for (int c = 0; c < 4; ++c) out_reg[4 * k + c] = T(0);
    out_ctr[k] = T(0);
  } else {
    fcos_encode(x, y, make_fcos_gt(image_gts + 4 * best), out_reg + 4 * k, out_ctr + k);
  }
}

void fcos_cuda(FcosProblem& f) {
  if (f.B == 0 || f.P == 0) return;
  c10::cuda::CUDAGuard guard(f.points.device());
  TORCH_CHECK_VALUE(f.B <= 65535, "fcos_targets_batched: at most 65535 images per call on CUDA, got ", f.B);
  const dim3 grid(static_cast<unsigned>((f.P + kThreads - 1) / kThreads), static_cast<unsigned>(f.B));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(f.points.scalar_type(), "fcos_targets", [&] {
    fcos_targets_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        f.points.const_data_ptr<scalar_t>(), f.strides.const_data_ptr<scalar_t>(), f.ranges.const_data_ptr<scalar_t>(),
        f.gts.const_data_ptr<scalar_t>(), f.valid.defined() ? f.valid.const_data_ptr<bool>() : nullptr, f.P, f.G,
        f.center, static_cast<scalar_t>(f.radius), f.gt_index.mutable_data_ptr<int64_t>(),
        f.reg.mutable_data_ptr<scalar_t>(), f.ctr.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("fcos_targets", &fcos_targets_entry<fcos_cuda>);
  m.impl("fcos_targets_batched", &fcos_targets_batched_entry<fcos_cuda>);
}

}  // namespace nasx::ops
