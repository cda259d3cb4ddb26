// CUDA kernels of roi_align and its backward: one thread per output bin (RoI,
// channel, ph, pw), 64-bit indexing throughout. The backward scatters with
// atomicAdd, so on the GPU its sums are not bitwise reproducible run to run
// (as torchvision's); the CPU backward is. A RoI whose batch index is outside
// [0, N) contributes zeros here (checking it would need a host sync); the CPU
// kernel raises.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/feature_checks.h"
#include "ops/cuda/launch.cuh"
#include "ops/roi_align_math.h"

namespace nasx::ops {
namespace {

// Output bin `index` = ((n * channels + c) * ph + i) * pw + j, and RoI n's geometry;
// false when the RoI's batch index is outside [0, batch) (it contributes zeros).
template <typename T>
struct Bin {
  int64_t n, c;
  int i, j;
  RoiGeometry<T> g;
};

template <typename T>
__device__ bool bin_at(int64_t index, const T* rois, int64_t batch, int64_t channels, int ph, int pw, T scale,
                       int sampling_ratio, bool aligned, Bin<T>& b) {
  b.j = static_cast<int>(index % pw);
  b.i = static_cast<int>((index / pw) % ph);
  b.c = (index / pw / ph) % channels;
  b.n = index / pw / ph / channels;
  b.g = roi_geometry<T>(rois + 5 * b.n, scale, ph, pw, sampling_ratio, aligned);
  return b.g.batch >= 0 && b.g.batch < batch;
}

template <typename T>
__global__ void roi_align_forward_kernel(const T* __restrict__ input, const T* __restrict__ rois, int64_t total,
                                         int64_t batch, int64_t channels, int64_t height, int64_t width, int ph,
                                         int pw, T scale, int sampling_ratio, bool aligned, T* __restrict__ out) {
  NASX_GRID_STRIDE(index, total) {
    Bin<T> b;
    if (!bin_at(index, rois, batch, channels, ph, pw, scale, sampling_ratio, aligned, b)) {
      out[index] = T(0);
      continue;
    }
    const T* p = input + (b.g.batch * channels + b.c) * height * width;
    T acc = 0;
    for_each_bin_tap(b.g, b.i, b.j, height, width, [&](const Tap<T>& t) {
      acc += t.w[0] * p[t.pos[0]] + t.w[1] * p[t.pos[1]] + t.w[2] * p[t.pos[2]] + t.w[3] * p[t.pos[3]];
    });
    out[index] = acc / b.g.count;
  }
}

template <typename T>
__global__ void roi_align_backward_kernel(const T* __restrict__ grad, const T* __restrict__ rois, int64_t total,
                                          int64_t batch, int64_t channels, int64_t height, int64_t width, int ph,
                                          int pw, T scale, int sampling_ratio, bool aligned,
                                          T* __restrict__ grad_input) {
  NASX_GRID_STRIDE(index, total) {
    Bin<T> b;
    if (!bin_at(index, rois, batch, channels, ph, pw, scale, sampling_ratio, aligned, b)) continue;
    T* p = grad_input + (b.g.batch * channels + b.c) * height * width;
    const T gb = grad[index];
    for_each_bin_tap(b.g, b.i, b.j, height, width, [&](const Tap<T>& t) {
      if (t.empty) return;
      for (int k = 0; k < 4; ++k) atomicAdd(p + t.pos[k], gb * t.w[k] / b.g.count);
    });
  }
}

at::Tensor roi_align_cuda(const at::Tensor& input_in, const at::Tensor& rois_in, double spatial_scale, int64_t ph,
                          int64_t pw, int64_t sampling_ratio, bool aligned) {
  c10::cuda::CUDAGuard guard(input_in.device());
  auto pr = prepare_roi_align(input_in, rois_in, spatial_scale, ph, pw);
  const int64_t total = pr.out.numel();
  if (total == 0) return pr.result();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pr.data.scalar_type(), "roi_align", [&] {
    roi_align_forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        pr.data.const_data_ptr<scalar_t>(), pr.rois.const_data_ptr<scalar_t>(), total, pr.batch, pr.channels,
        pr.height, pr.width,
        static_cast<int>(ph), static_cast<int>(pw), static_cast<scalar_t>(spatial_scale),
        static_cast<int>(sampling_ratio), aligned, pr.out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return pr.result();
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad_in, const at::Tensor& rois_in, double spatial_scale,
                                   int64_t ph, int64_t pw, int64_t batch, int64_t channels, int64_t height,
                                   int64_t width, int64_t sampling_ratio, bool aligned) {
  c10::cuda::CUDAGuard guard(grad_in.device());
  auto pr = prepare_roi_align_backward(grad_in, rois_in, spatial_scale, ph, pw, batch, channels, height, width);
  const int64_t total = pr.data.numel();
  if (total == 0) return pr.result();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pr.data.scalar_type(), "roi_align_backward", [&] {
    roi_align_backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        pr.data.const_data_ptr<scalar_t>(), pr.rois.const_data_ptr<scalar_t>(), total, batch, channels, height, width,
        static_cast<int>(ph), static_cast<int>(pw), static_cast<scalar_t>(spatial_scale),
        static_cast<int>(sampling_ratio), aligned, pr.out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return pr.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("roi_align", &roi_align_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace nasx::ops
