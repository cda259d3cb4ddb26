// CUDA kernels of sigmoid_focal_loss and its backward: one fused element-wise
// pass each (grid-stride, 64-bit indices). The forward is torchvision's formula
// step by step (focal_loss_math.h) with CUDA's expf / log1pf / powf, the
// functions torch's own CUDA kernels call, and no contracted products. Reduced
// losses sum per block in double into a fixed number of partials, then add those
// up: no atomics, so the result is the same on every run.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "ops/assign_checks.h"
#include "ops/focal_loss_math.h"

namespace nasx::ops {
namespace {

constexpr int kThreads = 256;

int64_t num_blocks(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 4096)); }

// The loss of one element, with CUDA's expf / log1pf / powf (as torch's CUDA kernels).
template <typename T>
__device__ __forceinline__ T element_loss(T x, T t, const FocalParams<T>& prm) {
  const auto c = focal_core(x, t, focal_sigmoid(x), focal_log_sigmoid(x), prm);
  const T m = prm.pow == FocalPow::General ? ::pow(c.q, prm.gamma) : focal_pow(c.q, prm.pow);
  return focal_finish(c, m, prm);
}

template <typename T>
__global__ void focal_loss_kernel(const T* __restrict__ x, const T* __restrict__ t, int64_t n, FocalParams<T> prm,
                                  T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = element_loss(x[i], t[i], prm);
  }
}

template <typename T>
__global__ void focal_loss_sum_kernel(const T* __restrict__ x, const T* __restrict__ t, int64_t n,
                                      FocalParams<T> prm, double* __restrict__ partial) {
  __shared__ double acc[kThreads];
  double s = 0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    s += static_cast<double>(element_loss(x[i], t[i], prm));
  }
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}

// grad is per element (per_element) or one scalar read on the device (no host sync).
template <typename T, bool WithTargets>
__global__ void focal_grad_kernel(const T* __restrict__ x, const T* __restrict__ t, const T* __restrict__ grad,
                                  bool per_element, T count, int64_t n, FocalParams<T> prm, T* __restrict__ dx,
                                  T* __restrict__ dt) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const T scale = per_element ? T(0) : grad[0] / count;  // torch's mean backward divides, so do we
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const auto c = focal_core(x[i], t[i], focal_sigmoid(x[i]), focal_log_sigmoid(x[i]), prm);
    const T m = prm.pow == FocalPow::General ? ::pow(c.q, prm.gamma) : focal_pow(c.q, prm.pow);
    T gx, gt;
    focal_grad<T, WithTargets>(x[i], t[i], c, m, prm, per_element ? grad[i] : scale, &gx, &gt);
    dx[i] = gx;
    if constexpr (WithTargets) dt[i] = gt;
  }
}

at::Tensor sigmoid_focal_loss_cuda(const at::Tensor& inputs, const at::Tensor& targets, double alpha, double gamma,
                                   c10::string_view reduction) {
  c10::cuda::CUDAGuard guard(inputs.device());
  const auto f = prepare_focal(inputs, targets, alpha, gamma, reduction);
  const int64_t n = f.n;
  auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(f.dtype, "sigmoid_focal_loss", [&] {
    const FocalParams<scalar_t> prm(alpha, gamma);
    if (f.reduction == Reduction::None) {
      out = at::empty(f.x.sizes(), f.x.options());
      if (n == 0) return;
      focal_loss_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
          f.x.const_data_ptr<scalar_t>(), f.t.const_data_ptr<scalar_t>(), n, prm, out.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int64_t blocks = num_blocks(n);
    auto partial = at::zeros({blocks}, f.x.options().dtype(at::kDouble));
    if (n > 0) {
      focal_loss_sum_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          f.x.const_data_ptr<scalar_t>(), f.t.const_data_ptr<scalar_t>(), n, prm, partial.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    auto total = partial.sum();
    if (f.reduction == Reduction::Mean) total = total / static_cast<double>(n);
    out = total.to(f.dtype);
  });
  return out.scalar_type() == f.out_dtype ? out : out.to(f.out_dtype);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& inputs,
                                                                    const at::Tensor& targets, double alpha,
                                                                    double gamma, c10::string_view reduction,
                                                                    bool targets_grad) {
  c10::cuda::CUDAGuard guard(inputs.device());
  const auto f = prepare_focal_backward(grad, inputs, targets, alpha, gamma, reduction);
  const int64_t n = f.n;
  auto dx = at::empty(f.x.sizes(), f.x.options());
  auto dt = targets_grad ? at::empty(f.x.sizes(), f.x.options()) : at::empty({0}, f.x.options());
  auto stream = at::cuda::getCurrentCUDAStream();
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(f.dtype, "sigmoid_focal_loss", [&] {
      const FocalParams<scalar_t> prm(alpha, gamma);
      const bool per_element = f.reduction == Reduction::None;
      const scalar_t count = f.reduction == Reduction::Mean ? static_cast<scalar_t>(n) : scalar_t(1);
      const scalar_t* px = f.x.const_data_ptr<scalar_t>();
      const scalar_t* pt = f.t.const_data_ptr<scalar_t>();
      const scalar_t* pg = f.grad.const_data_ptr<scalar_t>();
      if (targets_grad) {
        focal_grad_kernel<scalar_t, true><<<num_blocks(n), kThreads, 0, stream>>>(
            px, pt, pg, per_element, count, n, prm, dx.mutable_data_ptr<scalar_t>(), dt.mutable_data_ptr<scalar_t>());
      } else {
        focal_grad_kernel<scalar_t, false><<<num_blocks(n), kThreads, 0, stream>>>(
            px, pt, pg, per_element, count, n, prm, dx.mutable_data_ptr<scalar_t>(), nullptr);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {dx.to(inputs.scalar_type()), targets_grad ? dt.to(targets.scalar_type()) : at::empty({0}, targets.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cuda);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cuda);
}

}  // namespace nasx::ops
