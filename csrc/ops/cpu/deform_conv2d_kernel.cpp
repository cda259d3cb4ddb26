// CPU kernels of deform_conv2d and its backward.
//
// Per image: the bilinear samples of every (offset group, tap, output pixel) are
// computed once and shared by all channels of the offset group. Dense path:
// columns [C_in * K, P] (K = kH kW taps, P = output pixels) filled in parallel, then
// one GEMM per weight group. Depthwise path (groups == C_in): no columns and no
// GEMM; each channel's outputs are accumulated directly, in parallel over channels.
//
// Backward, one fused pass over the samples, deterministic whatever the thread
// count: channels are split into fixed chunks inside each offset group; a chunk
// owns its channels' input-gradient planes (scattered in a fixed order) and has
// its own offset/mask-gradient accumulators, which are then summed chunk by chunk
// in order. The weight gradient is a GEMM (dense) or per-channel dot products
// owned by one chunk (depthwise), accumulated over images in order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ops/deform_conv2d_args.h"
#include "ops/deform_conv2d_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kMaxChunks = 16;  // channel chunks per offset group in the backward

struct Prepared {
  DeformConvShape s;
  at::Tensor input, weight, offset, mask;  // contiguous, in the compute dtype; mask undefined if unused
};

Prepared prepare(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                 const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& bias, int64_t stride_h,
                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, const char* op) {
  Prepared p;
  p.s = deform_conv2d_shape(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, op);
  const auto dtype = feature_compute_dtype(input.scalar_type());
  p.input = input.to(dtype).contiguous();
  p.weight = weight.to(dtype).contiguous();
  p.offset = offset.to(dtype).contiguous();
  if (p.s.use_mask) p.mask = mask->to(dtype).contiguous();
  return p;
}

// samples[(g * K + k) * P + p] for one image.
template <typename T>
void compute_samples(const DeformConvShape& s, const T* offset, std::vector<DeformSample<T>>& samples) {
  const int64_t K = s.taps(), P = s.pixels();
  samples.resize(s.offset_groups * K * P);
  at::parallel_for(0, s.offset_groups * K, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t g = r / K, k = r % K, i = k / s.kw, j = k % s.kw;
      const T* off_h = offset + (g * 2 * K + 2 * k) * P;
      const T* off_w = off_h + P;
      DeformSample<T>* out = samples.data() + r * P;
      for (int64_t oy = 0, p = 0; oy < s.out_h; ++oy) {
        const T h0 = static_cast<T>(tap_origin(oy, s.stride_h, s.pad_h, i, s.dil_h));
        for (int64_t ox = 0; ox < s.out_w; ++ox, ++p) {
          const T w0 = static_cast<T>(tap_origin(ox, s.stride_w, s.pad_w, j, s.dil_w));
          out[p] = deform_sample<T>(h0 + off_h[p], w0 + off_w[p], s.height, s.width);
        }
      }
    }
  });
}

// columns[(c * K + k) * P + p] = mask * sample value, for one image.
template <typename T>
void im2col(const DeformConvShape& s, const T* in, const T* mask, const std::vector<DeformSample<T>>& samples, T* columns) {
  const int64_t K = s.taps(), P = s.pixels(), plane = s.height * s.width, cgo = s.in_per_offset_group();
  at::parallel_for(0, s.in_ch * K, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / K, k = r % K, row = (c / cgo) * K + k;
      const T* src = in + c * plane;
      const DeformSample<T>* sm = samples.data() + row * P;
      const T* m = mask ? mask + row * P : nullptr;
      T* col = columns + r * P;
      for (int64_t p = 0; p < P; ++p) {
        const T v = interpolate(sm[p], corners(src, sm[p]));
        col[p] = m ? m[p] * v : v;
      }
    }
  });
}

// Depthwise forward for one image: out[o, p] = sum_k weight[o, k] * mask * value(channel o / mult).
template <typename T>
void depthwise_forward(const DeformConvShape& s, const T* in, const T* mask, const T* weight,
                       const std::vector<DeformSample<T>>& samples, T* out) {
  const int64_t K = s.taps(), P = s.pixels(), plane = s.height * s.width, cgo = s.in_per_offset_group();
  const int64_t mult = s.out_per_group();
  at::parallel_for(0, s.in_ch, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const T* src = in + c * plane;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t row = (c / cgo) * K + k;
        const DeformSample<T>* sm = samples.data() + row * P;
        const T* m = mask ? mask + row * P : nullptr;
        for (int64_t o = c * mult; o < (c + 1) * mult; ++o) {
          const T wk = weight[o * K + k];
          T* dst = out + o * P;
          for (int64_t p = 0; p < P; ++p) {
            const T v = interpolate(sm[p], corners(src, sm[p]));
            dst[p] += wk * (m ? m[p] * v : v);
          }
        }
      }
    }
  });
}

at::Tensor deform_conv2d_cpu(const at::Tensor& input_in, const at::Tensor& weight_in, const at::Tensor& offset_in,
                             const std::optional<at::Tensor>& mask_in, const std::optional<at::Tensor>& bias,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                             int64_t dil_w) {
  const auto pr = prepare(input_in, weight_in, offset_in, mask_in, bias, stride_h, stride_w, pad_h, pad_w, dil_h,
                          dil_w, "deform_conv2d");
  const auto& s = pr.s;
  auto output = at::zeros({s.batch, s.out_ch, s.out_h, s.out_w}, pr.input.options());
  if (output.numel() == 0) return output.to(input_in.scalar_type());
  const int64_t K = s.taps(), P = s.pixels(), cgk = s.in_per_group() * K, og = s.out_per_group();
  AT_DISPATCH_FLOATING_TYPES(pr.input.scalar_type(), "deform_conv2d", [&] {
    using T = scalar_t;
    std::vector<DeformSample<T>> samples;
    at::Tensor columns = s.depthwise() ? at::Tensor() : at::empty({s.in_ch * K, P}, pr.input.options());
    const auto w2d = pr.weight.view({s.out_ch, cgk});
    for (int64_t b = 0; b < s.batch; ++b) {
      compute_samples(s, pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P, samples);
      const T* in = pr.input.const_data_ptr<T>() + b * s.in_ch * s.height * s.width;
      const T* m = s.use_mask ? pr.mask.const_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
      auto out_b = output[b].view({s.out_ch, P});
      if (s.depthwise()) {
        depthwise_forward(s, in, m, pr.weight.const_data_ptr<T>(), samples, out_b.mutable_data_ptr<T>());
        continue;
      }
      im2col(s, in, m, samples, columns.mutable_data_ptr<T>());
      for (int64_t g = 0; g < s.groups; ++g) {
        auto dst = out_b.narrow(0, g * og, og);
        at::mm_out(dst, w2d.narrow(0, g * og, og), columns.narrow(0, g * cgk, cgk));
      }
    }
  });
  if (bias.has_value() && bias->defined()) output.add_(bias->to(output.scalar_type()).view({1, s.out_ch, 1, 1}));
  return output.to(input_in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& input_in, const at::Tensor& weight_in, const at::Tensor& offset_in,
    const std::optional<at::Tensor>& mask_in, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dil_h, int64_t dil_w) {
  const char* op = "deform_conv2d_backward";
  const auto pr = prepare(input_in, weight_in, offset_in, mask_in, std::nullopt, stride_h, stride_w, pad_h, pad_w,
                          dil_h, dil_w, op);
  const auto& s = pr.s;
  check_float(grad_in, op, "grad");
  TORCH_CHECK_VALUE(grad_in.dim() == 4 && grad_in.size(0) == s.batch && grad_in.size(1) == s.out_ch &&
                        grad_in.size(2) == s.out_h && grad_in.size(3) == s.out_w,
                    op, ": expected grad of shape [", s.batch, ", ", s.out_ch, ", ", s.out_h, ", ", s.out_w,
                    "], got shape ", grad_in.sizes());
  const auto opts = pr.input.options();
  const auto grad = grad_in.to(opts.dtype()).contiguous();
  auto grad_input = at::zeros_like(pr.input);
  auto grad_weight = at::zeros_like(pr.weight);
  auto grad_offset = at::zeros_like(pr.offset);
  auto grad_mask = s.use_mask ? at::zeros_like(pr.mask) : at::zeros({0}, opts);
  auto grad_bias = grad.sum({0, 2, 3});
  const int64_t K = s.taps(), P = s.pixels(), cgk = s.in_per_group() * K, og = s.out_per_group();
  const int64_t plane = s.height * s.width, cgo = s.in_per_offset_group();
  const int64_t chunks = std::min(cgo, kMaxChunks), tasks = s.offset_groups * chunks;
  if (grad.numel() > 0 && s.in_ch > 0) {
    AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "deform_conv2d_backward", [&] {
      using T = scalar_t;
      std::vector<DeformSample<T>> samples;
      const bool dense = !s.depthwise();
      at::Tensor columns, grad_columns;
      if (dense) {
        columns = at::empty({s.in_ch * K, P}, opts);
        grad_columns = at::empty({s.in_ch * K, P}, opts);
      }
      std::vector<T> acc(tasks * 3 * K * P);  // per chunk: d offset_h, d offset_w, d mask
      const auto w2d = pr.weight.view({s.out_ch, cgk});
      auto gw2d = grad_weight.view({s.out_ch, cgk});
      const T* weight = pr.weight.const_data_ptr<T>();
      T* gw = grad_weight.mutable_data_ptr<T>();
      for (int64_t b = 0; b < s.batch; ++b) {
        compute_samples(s, pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P, samples);
        const T* in = pr.input.const_data_ptr<T>() + b * s.in_ch * plane;
        T* gin = grad_input.mutable_data_ptr<T>() + b * s.in_ch * plane;
        const T* mask = s.use_mask ? pr.mask.const_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
        const auto go_b = grad[b].view({s.out_ch, P});
        const T* go = go_b.const_data_ptr<T>();
        if (dense) {
          for (int64_t g = 0; g < s.groups; ++g) {
            auto dst = grad_columns.narrow(0, g * cgk, cgk);
            at::mm_out(dst, w2d.narrow(0, g * og, og).t(), go_b.narrow(0, g * og, og));
          }
        }
        std::fill(acc.begin(), acc.end(), T(0));
        at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
          std::vector<T> gc_row(dense ? 0 : P);
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t g = t / chunks, q = t % chunks;
            const int64_t c_begin = g * cgo + q * cgo / chunks, c_end = g * cgo + (q + 1) * cgo / chunks;
            for (int64_t k = 0; k < K; ++k) {
              const int64_t row = g * K + k;
              const DeformSample<T>* sm = samples.data() + row * P;
              const T* m = mask ? mask + row * P : nullptr;
              T* acc_h = acc.data() + ((t * 3 + 0) * K + k) * P;
              T* acc_w = acc.data() + ((t * 3 + 1) * K + k) * P;
              T* acc_m = acc.data() + ((t * 3 + 2) * K + k) * P;
              for (int64_t c = c_begin; c < c_end; ++c) {
                const T* src = in + c * plane;
                T* gsrc = gin + c * plane;
                const T* gc;
                T* col = nullptr;
                if (dense) {
                  gc = grad_columns.const_data_ptr<T>() + (c * K + k) * P;
                  col = columns.mutable_data_ptr<T>() + (c * K + k) * P;
                } else {  // gradient of this channel's column: sum over its outputs
                  std::fill(gc_row.begin(), gc_row.end(), T(0));
                  for (int64_t o = c * og; o < (c + 1) * og; ++o) {
                    const T wk = weight[o * K + k];
                    for (int64_t p = 0; p < P; ++p) gc_row[p] += wk * go[o * P + p];
                  }
                  gc = gc_row.data();
                }
                // Depthwise with one output per channel: the weight gradient rides along.
                const bool fused_wgrad = !dense && og == 1;
                T wsum = 0;
                for (int64_t p = 0; p < P; ++p) {
                  const auto& sp = sm[p];
                  const auto cr = corners(src, sp);
                  const T v = interpolate(sp, cr);
                  const T mv = m ? m[p] : T(1);
                  const T gcv = gc[p];
                  const T colv = m ? mv * v : v;
                  if (dense) col[p] = colv;
                  if (fused_wgrad) wsum += go[c * P + p] * colv;
                  const T gm = mv * gcv;
                  for (int i = 0; i < 4; ++i) {
                    if (sp.idx[i] >= 0) gsrc[sp.idx[i]] += sp.weight(i) * gm;
                  }
                  acc_h[p] += mv * d_dh(sp, cr) * gcv;
                  acc_w[p] += mv * d_dw(sp, cr) * gcv;
                  if (m) acc_m[p] += gcv * v;
                }
                if (fused_wgrad) gw[c * K + k] += wsum;
                if (!dense && !fused_wgrad) {  // weight gradient of this channel's outputs; this chunk owns them
                  for (int64_t o = c * og; o < (c + 1) * og; ++o) {
                    T sum = 0;
                    for (int64_t p = 0; p < P; ++p) {
                      const T v = interpolate(sm[p], corners(src, sm[p]));
                      sum += go[o * P + p] * (m ? m[p] * v : v);
                    }
                    gw[o * K + k] += sum;
                  }
                }
              }
            }
          }
        });
        // Offset and mask gradients: chunk sums in chunk order.
        T* goff = grad_offset.mutable_data_ptr<T>() + b * s.offset_groups * 2 * K * P;
        T* gmask = s.use_mask ? grad_mask.mutable_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
        at::parallel_for(0, s.offset_groups * K, 1, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t g = r / K, k = r % K;
            T* dh = goff + (g * 2 * K + 2 * k) * P;
            T* dw = dh + P;
            T* dm = gmask ? gmask + r * P : nullptr;
            for (int64_t q = 0; q < chunks; ++q) {
              const int64_t t = g * chunks + q;
              const T* ah = acc.data() + ((t * 3 + 0) * K + k) * P;
              const T* aw = acc.data() + ((t * 3 + 1) * K + k) * P;
              const T* am = acc.data() + ((t * 3 + 2) * K + k) * P;
              for (int64_t p = 0; p < P; ++p) {
                dh[p] += ah[p];
                dw[p] += aw[p];
                if (dm) dm[p] += am[p];
              }
            }
          }
        });
        if (dense) {
          for (int64_t g = 0; g < s.groups; ++g) {
            gw2d.narrow(0, g * og, og).addmm_(go_b.narrow(0, g * og, og), columns.narrow(0, g * cgk, cgk).t());
          }
        }
      }
    });
  }
  const auto dt = input_in.scalar_type();
  return {grad_input.to(dt), grad_weight.to(weight_in.scalar_type()), grad_offset.to(offset_in.scalar_type()),
          s.use_mask ? grad_mask.to(mask_in->scalar_type()) : grad_mask.to(dt), grad_bias.to(dt)};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_cpu);
  m.impl("_deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace nasx::ops
