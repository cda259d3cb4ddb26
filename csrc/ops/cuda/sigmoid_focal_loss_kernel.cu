// CUDA kernels of sigmoid_focal_loss and its backward: one fused element-wise
// pass each (grid-stride, 64-bit indices). Reduced losses sum per block in double
// into a fixed number of partials, then add those up: no atomics, so the result
// is the same on every run.
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

template <typename T>
__global__ void focal_loss_kernel(const T* __restrict__ x, const T* __restrict__ t, int64_t n, FocalParams<T> prm,
                                  T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = focal_loss(x[i], t[i], prm);
  }
}

template <typename T>
__global__ void focal_loss_sum_kernel(const T* __restrict__ x, const T* __restrict__ t, int64_t n,
                                      FocalParams<T> prm, double* __restrict__ partial) {
  __shared__ double acc[kThreads];
  double s = 0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    s += static_cast<double>(focal_loss(x[i], t[i], prm));
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
    T gx, gt;
    focal_grad<T, WithTargets>(x[i], t[i], prm, per_element ? grad[i] : scale, &gx, &gt);
    dx[i] = gx;
    if constexpr (WithTargets) dt[i] = gt;
  }
}

at::Tensor sigmoid_focal_loss_cuda(const at::Tensor& inputs_in, const at::Tensor& targets_in, double alpha,
                                   double gamma, c10::string_view reduction_name) {
  const char* op = "sigmoid_focal_loss";
  check_sigmoid_focal_loss_inputs(inputs_in, targets_in, alpha, gamma, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  c10::cuda::CUDAGuard guard(inputs_in.device());
  const auto out_dtype = at::promote_types(inputs_in.scalar_type(), targets_in.scalar_type());
  const auto dtype = compute_dtype(out_dtype);
  const auto x = inputs_in.to(dtype).contiguous();
  const auto t = targets_in.to(dtype).contiguous();
  const int64_t n = x.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "sigmoid_focal_loss", [&] {
    const FocalParams<scalar_t> prm(alpha, gamma);
    if (reduction == Reduction::None) {
      out = at::empty(x.sizes(), x.options());
      if (n == 0) return;
      focal_loss_kernel<scalar_t><<<num_blocks(n), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), n, prm, out.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int64_t blocks = num_blocks(n);
    auto partial = at::zeros({blocks}, x.options().dtype(at::kDouble));
    if (n > 0) {
      focal_loss_sum_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), n, prm, partial.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    auto total = partial.sum();
    if (reduction == Reduction::Mean) total = total / static_cast<double>(n);
    out = total.to(dtype);
  });
  return out.scalar_type() == out_dtype ? out : out.to(out_dtype);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_backward_cuda(const at::Tensor& grad_in,
                                                                    const at::Tensor& inputs_in,
                                                                    const at::Tensor& targets_in, double alpha,
                                                                    double gamma, c10::string_view reduction_name,
                                                                    bool targets_grad) {
  const char* op = "sigmoid_focal_loss_backward";
  check_sigmoid_focal_loss_inputs(inputs_in, targets_in, alpha, gamma, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  check_float(grad_in, op, "grad");
  check_same_device(inputs_in, "inputs", grad_in, "grad", op);
  if (reduction == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.sizes() == inputs_in.sizes(), op, ": expected grad of shape ", inputs_in.sizes(),
                      ", got shape ", grad_in.sizes());
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": expected a one-element grad for a reduced loss, got shape ",
                      grad_in.sizes());
  }
  c10::cuda::CUDAGuard guard(inputs_in.device());
  const auto dtype = compute_dtype(at::promote_types(inputs_in.scalar_type(), targets_in.scalar_type()));
  const auto x = inputs_in.to(dtype).contiguous();
  const auto t = targets_in.to(dtype).contiguous();
  const auto g = grad_in.to(dtype).contiguous();
  const int64_t n = x.numel();
  auto dx = at::empty(x.sizes(), x.options());
  auto dt = targets_grad ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  auto stream = at::cuda::getCurrentCUDAStream();
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "sigmoid_focal_loss", [&] {
      const FocalParams<scalar_t> prm(alpha, gamma);
      const bool per_element = reduction == Reduction::None;
      const scalar_t count = reduction == Reduction::Mean ? static_cast<scalar_t>(n) : scalar_t(1);
      if (targets_grad) {
        focal_grad_kernel<scalar_t, true><<<num_blocks(n), kThreads, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), per_element,
            count, n, prm, dx.mutable_data_ptr<scalar_t>(), dt.mutable_data_ptr<scalar_t>());
      } else {
        focal_grad_kernel<scalar_t, false><<<num_blocks(n), kThreads, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), per_element,
            count, n, prm, dx.mutable_data_ptr<scalar_t>(), nullptr);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {dx.to(inputs_in.scalar_type()), targets_grad ? dt.to(targets_in.scalar_type()) : at::empty({0}, targets_in.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cuda);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cuda);
}

}  // namespace nasx::ops
