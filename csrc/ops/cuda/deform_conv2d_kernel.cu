// CUDA kernels of deform_conv2d and its backward, 64-bit indexing throughout
// (torchvision's illegal-memory-access reports came from 32-bit indices).
//
// Dense path: images in chunks whose columns [n, C_in * K, P] fit a fixed budget;
// im2col kernel, then one batched GEMM per chunk over the weight groups. Depthwise
// path (groups == C_in): the forward is one direct kernel, no columns.
// Backward: grad columns = W^T grad (batched GEMM); col2im scatters into the input
// gradient with atomicAdd (not bitwise reproducible run to run, as torchvision's);
// one thread per offset/mask element sums over the channels of its offset group
// (deterministic); weight gradient = grad x columns^T, summed over images.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/deform_conv2d_args.h"
#include "ops/cuda/launch.cuh"
#include "ops/deform_conv2d_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kColumnsBudget = int64_t(1) << 26;  // elements of the columns buffer per chunk

// Plain-value copy of the shape for kernels.
struct Dims {
  int64_t in_ch, height, width, out_ch, kh, kw, offset_groups, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, cgo, mult;
  explicit Dims(const DeformConvShape& s)
      : in_ch(s.in_ch), height(s.height), width(s.width), out_ch(s.out_ch), kh(s.kh), kw(s.kw),
        offset_groups(s.offset_groups), out_h(s.out_h), out_w(s.out_w), stride_h(s.stride_h),
        stride_w(s.stride_w), pad_h(s.pad_h), pad_w(s.pad_w), dil_h(s.dil_h), dil_w(s.dil_w),
        cgo(s.in_per_offset_group()), mult(s.out_per_group()) {}
  __device__ int64_t taps() const { return kh * kw; }
  __device__ int64_t pixels() const { return out_h * out_w; }
};

// Sample of tap k of pixel p, offset group g, image b.
template <typename T>
__device__ DeformSample<T> sample_at(const Dims& d, const T* offset, int64_t b, int64_t g, int64_t k, int64_t p) {
  const int64_t K = d.taps(), P = d.pixels();
  const T* off = offset + ((b * d.offset_groups + g) * 2 * K + 2 * k) * P + p;
  const int64_t oy = p / d.out_w, ox = p % d.out_w;
  const T h = static_cast<T>(tap_origin(oy, d.stride_h, d.pad_h, k / d.kw, d.dil_h)) + off[0];
  const T w = static_cast<T>(tap_origin(ox, d.stride_w, d.pad_w, k % d.kw, d.dil_w)) + off[P];
  return deform_sample<T>(h, w, d.height, d.width);
}

template <typename T>
__device__ T mask_at(const Dims& d, const T* mask, int64_t b, int64_t g, int64_t k, int64_t p) {
  return mask ? mask[((b * d.offset_groups + g) * d.taps() + k) * d.pixels() + p] : T(1);
}

// Element idx of the columns [n, C_in * K, P] of images b0..: pixel p, tap k,
// channel c, image b, offset group g.
struct Column {
  int64_t p, k, c, b, g;
};

__device__ inline Column column_at(const Dims& d, int64_t idx, int64_t b0) {
  const int64_t K = d.taps(), P = d.pixels();
  Column col;
  col.p = idx % P;
  col.k = (idx / P) % K;
  col.c = (idx / P / K) % d.in_ch;
  col.b = b0 + idx / P / K / d.in_ch;
  col.g = col.c / d.cgo;
  return col;
}

// Column element idx, its bilinear sample, the mask value and the input plane it reads.
template <typename T>
struct ColumnSample {
  Column at;
  DeformSample<T> s;
  T mask;
  int64_t plane;  // offset of channel at.c of image at.b in the input (or its gradient)
};

template <typename T>
__device__ ColumnSample<T> column_sample(const Dims& d, const T* offset, const T* mask, int64_t idx, int64_t b0) {
  ColumnSample<T> cs;
  cs.at = column_at(d, idx, b0);
  cs.s = sample_at(d, offset, cs.at.b, cs.at.g, cs.at.k, cs.at.p);
  cs.mask = mask_at(d, mask, cs.at.b, cs.at.g, cs.at.k, cs.at.p);
  cs.plane = (cs.at.b * d.in_ch + cs.at.c) * d.height * d.width;
  return cs;
}

// columns[bl, c * K + k, p] for images b0 + bl, bl < n.
template <typename T>
__global__ void im2col_kernel(Dims d, const T* __restrict__ input, const T* __restrict__ offset,
                              const T* __restrict__ mask, int64_t b0, int64_t n, T* __restrict__ columns) {
  const int64_t K = d.taps(), P = d.pixels(), total = n * d.in_ch * K * P;
  NASX_GRID_STRIDE(idx, total) {
    const auto cs = column_sample(d, offset, mask, idx, b0);
    const T v = interpolate(cs.s, corners(input + cs.plane, cs.s));
    columns[idx] = mask ? cs.mask * v : v;
  }
}

template <typename T>
__global__ void depthwise_forward_kernel(Dims d, int64_t batch, const T* __restrict__ input,
                                         const T* __restrict__ offset, const T* __restrict__ mask,
                                         const T* __restrict__ weight, T* __restrict__ out) {
  const int64_t K = d.taps(), P = d.pixels(), total = batch * d.out_ch * P;
  NASX_GRID_STRIDE(idx, total) {
    const int64_t p = idx % P, o = (idx / P) % d.out_ch, b = idx / P / d.out_ch;
    const int64_t c = o / d.mult, g = c / d.cgo;
    const T* src = input + (b * d.in_ch + c) * d.height * d.width;
    T acc = 0;
    for (int64_t k = 0; k < K; ++k) {
      const auto s = sample_at(d, offset, b, g, k, p);
      const T v = interpolate(s, corners(src, s));
      acc += weight[o * K + k] * (mask ? mask_at(d, mask, b, g, k, p) * v : v);
    }
    out[idx] = acc;
  }
}

// Input gradient: grad_columns[bl, c * K + k, p] scattered to the four corners.
template <typename T>
__global__ void col2im_kernel(Dims d, const T* __restrict__ grad_columns, const T* __restrict__ offset,
                              const T* __restrict__ mask, int64_t b0, int64_t n, T* __restrict__ grad_input) {
  const int64_t K = d.taps(), P = d.pixels(), total = n * d.in_ch * K * P;
  NASX_GRID_STRIDE(idx, total) {
    const auto cs = column_sample(d, offset, mask, idx, b0);
    const auto& s = cs.s;
    const T gm = cs.mask * grad_columns[idx];
    T* dst = grad_input + cs.plane;
    for (int i = 0; i < 4; ++i) {
      if (s.idx[i] >= 0) atomicAdd(dst + s.idx[i], s.weight(i) * gm);
    }
  }
}

// Offset and mask gradients: one thread per (image, offset group, tap, pixel).
template <typename T>
__global__ void coord_grad_kernel(Dims d, const T* __restrict__ grad_columns, const T* __restrict__ input,
                                  const T* __restrict__ offset, const T* __restrict__ mask, int64_t b0, int64_t n,
                                  T* __restrict__ grad_offset, T* __restrict__ grad_mask) {
  const int64_t K = d.taps(), P = d.pixels(), total = n * d.offset_groups * K * P;
  NASX_GRID_STRIDE(idx, total) {
    const int64_t p = idx % P, k = (idx / P) % K, g = (idx / P / K) % d.offset_groups;
    const int64_t bl = idx / P / K / d.offset_groups, b = b0 + bl;
    const auto s = sample_at(d, offset, b, g, k, p);
    const T mv = mask_at(d, mask, b, g, k, p);
    T dh = 0, dw = 0, dm = 0;
    for (int64_t c = g * d.cgo; c < (g + 1) * d.cgo; ++c) {
      const auto cr = corners(input + (b * d.in_ch + c) * d.height * d.width, s);
      const T gc = grad_columns[((bl * d.in_ch + c) * K + k) * P + p];
      dh += mv * d_dh(s, cr) * gc;
      dw += mv * d_dw(s, cr) * gc;
      if (mask) dm += gc * interpolate(s, cr);
    }
    T* go = grad_offset + ((b * d.offset_groups + g) * 2 * K + 2 * k) * P + p;
    go[0] = dh;
    go[P] = dw;
    if (mask) grad_mask[((b * d.offset_groups + g) * K + k) * P + p] = dm;
  }
}

int64_t images_per_chunk(const DeformConvShape& s) {
  const int64_t per_image = std::max<int64_t>(1, s.in_ch * s.taps() * s.pixels());
  return std::max<int64_t>(1, std::min(s.batch, kColumnsBudget / per_image));
}

template <typename T>
const T* mask_ptr(const Prepared& p) {
  return p.s.use_mask ? p.mask.const_data_ptr<T>() : nullptr;
}

at::Tensor deform_conv2d_cuda(const at::Tensor& input_in, const at::Tensor& weight_in, const at::Tensor& offset_in,
                              const std::optional<at::Tensor>& mask_in, const std::optional<at::Tensor>& bias,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                              int64_t dil_w) {
  c10::cuda::CUDAGuard guard(input_in.device());
  // The GEMMs inside must not be autocast (e.g. a backward run under torch.autocast).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto pr = prepare(input_in, weight_in, offset_in, mask_in, bias, stride_h, stride_w, pad_h, pad_w, dil_h,
                          dil_w, "deform_conv2d");
  const auto& s = pr.s;
  const Dims d(s);
  auto output = at::zeros({s.batch, s.out_ch, s.out_h, s.out_w}, pr.input.options());
  if (output.numel() == 0) return output.to(input_in.scalar_type());
  const int64_t K = s.taps(), P = s.pixels(), cgk = s.in_per_group() * K;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pr.input.scalar_type(), "deform_conv2d", [&] {
    using T = scalar_t;
    if (s.depthwise()) {
      depthwise_forward_kernel<T><<<blocks_for(output.numel()), kThreads, 0, stream>>>(
          d, s.batch, pr.input.const_data_ptr<T>(), pr.offset.const_data_ptr<T>(), mask_ptr<T>(pr),
          pr.weight.const_data_ptr<T>(), output.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const auto w = pr.weight.view({1, s.groups, s.out_per_group(), cgk});
    const int64_t chunk = images_per_chunk(s);
    for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
      const int64_t n = std::min(chunk, s.batch - b0);
      auto columns = at::empty({n, s.groups, cgk, P}, pr.input.options());
      im2col_kernel<T><<<blocks_for(columns.numel()), kThreads, 0, stream>>>(
          d, pr.input.const_data_ptr<T>(), pr.offset.const_data_ptr<T>(), mask_ptr<T>(pr), b0, n,
          columns.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      output.narrow(0, b0, n).view({n, s.groups, s.out_per_group(), P}).copy_(at::matmul(w, columns));
    }
  });
  if (bias.has_value() && bias->defined()) output.add_(bias->to(output.scalar_type()).view({1, s.out_ch, 1, 1}));
  return output.to(input_in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& input_in, const at::Tensor& weight_in, const at::Tensor& offset_in,
    const std::optional<at::Tensor>& mask_in, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dil_h, int64_t dil_w) {
  c10::cuda::CUDAGuard guard(input_in.device());
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto pr = prepare_backward(grad_in, input_in, weight_in, offset_in, mask_in, stride_h, stride_w, pad_h, pad_w,
                                   dil_h, dil_w);
  const auto& s = pr.s;
  const Dims d(s);
  const auto opts = pr.input.options();
  const auto& grad = pr.grad;
  auto gr = pr.zero_grads();
  // grad columns = W^T grad; the weight gradient accumulates as [groups, C_out / groups, C_in / groups * K].
  auto grad_weight = gr.weight.view({s.groups, s.out_per_group(), s.in_per_group() * s.taps()});
  const int64_t K = s.taps(), P = s.pixels(), cgk = s.in_per_group() * K;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (grad.numel() > 0 && s.in_ch > 0) {
    AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "deform_conv2d_backward", [&] {
      using T = scalar_t;
      const auto w = pr.weight.view({1, s.groups, s.out_per_group(), cgk});
      const int64_t chunk = images_per_chunk(s);
      for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
        const int64_t n = std::min(chunk, s.batch - b0);
        const auto go = grad.narrow(0, b0, n).view({n, s.groups, s.out_per_group(), P});
        const auto grad_columns = at::matmul(w.transpose(-1, -2), go).contiguous();  // [n, G, Cg K, P]
        col2im_kernel<T><<<blocks_for(grad_columns.numel()), kThreads, 0, stream>>>(
            d, grad_columns.const_data_ptr<T>(), pr.offset.const_data_ptr<T>(), mask_ptr<T>(pr), b0, n,
            gr.input.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        coord_grad_kernel<T><<<blocks_for(n * s.offset_groups * K * P), kThreads, 0, stream>>>(
            d, grad_columns.const_data_ptr<T>(), pr.input.const_data_ptr<T>(), pr.offset.const_data_ptr<T>(),
            mask_ptr<T>(pr), b0, n, gr.offset.mutable_data_ptr<T>(),
            s.use_mask ? gr.mask.mutable_data_ptr<T>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        auto columns = at::empty({n, s.groups, cgk, P}, opts);
        im2col_kernel<T><<<blocks_for(columns.numel()), kThreads, 0, stream>>>(
            d, pr.input.const_data_ptr<T>(), pr.offset.const_data_ptr<T>(), mask_ptr<T>(pr), b0, n,
            columns.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        grad_weight.add_(at::matmul(go, columns.transpose(-1, -2)).sum(0));
      }
    });
  }
  return pr.result(gr);
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_cuda);
  m.impl("_deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace nasx::ops
