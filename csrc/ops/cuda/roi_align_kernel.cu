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
#include "ops/roi_align_math.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535LL * 32 ? b : 65535LL * 32);
}

template <typename T>
__global__ void roi_align_forward_kernel(const T* __restrict__ input, const T* __restrict__ rois, int64_t total,
                                         int64_t batch, int64_t channels, int64_t height, int64_t width, int ph,
                                         int pw, T scale, int sampling_ratio, bool aligned, T* __restrict__ out) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int j = static_cast<int>(index % pw);
    const int i = static_cast<int>((index / pw) % ph);
    const int64_t c = (index / pw / ph) % channels;
    const int64_t n = index / pw / ph / channels;
    const auto g = roi_geometry<T>(rois + 5 * n, scale, ph, pw, sampling_ratio, aligned);
    if (g.batch < 0 || g.batch >= batch) {
      out[index] = T(0);
      continue;
    }
    const T* p = input + (g.batch * channels + c) * height * width;
    T acc = 0;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const T y = g.sample_y(i, iy);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const auto t = bilinear_tap<T>(height, width, y, g.sample_x(j, ix));
        acc += t.w[0] * p[t.pos[0]] + t.w[1] * p[t.pos[1]] + t.w[2] * p[t.pos[2]] + t.w[3] * p[t.pos[3]];
      }
    }
    out[index] = acc / g.count;
  }
}

template <typename T>
__global__ void roi_align_backward_kernel(const T* __restrict__ grad, const T* __restrict__ rois, int64_t total,
                                          int64_t batch, int64_t channels, int64_t height, int64_t width, int ph,
                                          int pw, T scale, int sampling_ratio, bool aligned,
                                          T* __restrict__ grad_input) {
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int j = static_cast<int>(index % pw);
    const int i = static_cast<int>((index / pw) % ph);
    const int64_t c = (index / pw / ph) % channels;
    const int64_t n = index / pw / ph / channels;
    const auto g = roi_geometry<T>(rois + 5 * n, scale, ph, pw, sampling_ratio, aligned);
    if (g.batch < 0 || g.batch >= batch) continue;
    T* p = grad_input + (g.batch * channels + c) * height * width;
    const T gb = grad[index];
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const T y = g.sample_y(i, iy);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const auto t = bilinear_tap<T>(height, width, y, g.sample_x(j, ix));
        if (t.empty) continue;
        for (int k = 0; k < 4; ++k) atomicAdd(p + t.pos[k], gb * t.w[k] / g.count);
      }
    }
  }
}

void check_roi_align_args(const at::Tensor& rois, double spatial_scale, int64_t ph, int64_t pw, const char* op) {
  check_float(rois, op, "rois");
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 5, op,
                    ": expected rois of shape [K, 5] (batch index, x1, y1, x2, y2), got shape ", rois.sizes());
  check_positive(ph, op, "pooled_height");
  check_positive(pw, op, "pooled_width");
  TORCH_CHECK_VALUE(std::isfinite(spatial_scale) && spatial_scale > 0, op,
                    ": expected spatial_scale > 0, got ", spatial_scale);
}

at::Tensor roi_align_cuda(const at::Tensor& input_in, const at::Tensor& rois_in, double spatial_scale, int64_t ph,
                          int64_t pw, int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align";
  check_float(input_in, op, "input");
  check_dim(input_in, 4, op, "input", "[N, C, H, W]");
  check_roi_align_args(rois_in, spatial_scale, ph, pw, op);
  check_same_device(input_in, "input", rois_in, "rois", op);
  c10::cuda::CUDAGuard guard(input_in.device());
  const auto dtype = compute_dtype(input_in.scalar_type());
  const auto input = input_in.to(dtype).contiguous();
  const auto rois = rois_in.to(dtype).contiguous();
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  check_plane(height, width, op);
  auto output = at::empty({rois.size(0), channels, ph, pw}, input.options());
  const int64_t total = output.numel();
  if (total == 0) return output.to(input_in.scalar_type());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "roi_align", [&] {
    roi_align_forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), total, batch, channels, height, width,
        static_cast<int>(ph), static_cast<int>(pw), static_cast<scalar_t>(spatial_scale),
        static_cast<int>(sampling_ratio), aligned, output.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output.to(input_in.scalar_type());
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad_in, const at::Tensor& rois_in, double spatial_scale,
                                   int64_t ph, int64_t pw, int64_t batch, int64_t channels, int64_t height,
                                   int64_t width, int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align_backward";
  check_float(grad_in, op, "grad");
  check_roi_align_args(rois_in, spatial_scale, ph, pw, op);
  check_same_device(grad_in, "grad", rois_in, "rois", op);
  const int64_t num_rois = rois_in.size(0);
  TORCH_CHECK_VALUE(grad_in.dim() == 4 && grad_in.size(0) == num_rois && grad_in.size(1) == channels &&
                        grad_in.size(2) == ph && grad_in.size(3) == pw,
                    op, ": expected grad of shape [", num_rois, ", ", channels, ", ", ph, ", ", pw, "], got shape ",
                    grad_in.sizes());
  check_plane(height, width, op);
  c10::cuda::CUDAGuard guard(grad_in.device());
  const auto dtype = compute_dtype(grad_in.scalar_type());
  const auto grad = grad_in.to(dtype).contiguous();
  const auto rois = rois_in.to(dtype).contiguous();
  auto grad_input = at::zeros({batch, channels, height, width}, grad.options());
  const int64_t total = grad.numel();
  if (total == 0) return grad_input.to(grad_in.scalar_type());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "roi_align_backward", [&] {
    roi_align_backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), total, batch, channels, height, width,
        static_cast<int>(ph), static_cast<int>(pw), static_cast<scalar_t>(spatial_scale),
        static_cast<int>(sampling_ratio), aligned, grad_input.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input.to(grad_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("roi_align", &roi_align_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace nasx::ops
