// CPU kernels of deform_conv2d and its backward.
//
// Work is split into tasks of (offset group, block of its channels); a task walks
// the taps and output pixels, decodes each sample (position, bilinear weights,
// mask) once and applies it to every channel of its block. Dense path: the tasks
// fill columns [C_in * K, P] (K = kH kW taps, P = output pixels), then one GEMM
// per weight group. Depthwise path (groups == C_in): no columns and no GEMM; the
// outputs are accumulated directly.
//
// Backward, one fused pass, deterministic whatever the thread count: the blocks
// are fixed by the shapes alone; a block owns its channels' input-gradient planes
// (scattered in a fixed order) and writes its own offset/mask-gradient partial
// sums, which are then added block by block in order. The weight gradient is a
// GEMM (dense) or, depthwise, dot products owned by the block, accumulated over
// images in order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ops/deform_conv2d_args.h"
#include "ops/cpu/simd.h"
#include "ops/deform_conv2d_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kMaxBlocks = 16;  // channel blocks per offset group

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

// Channel blocks: offset group g, block q covers channels [begin, end).
struct Blocks {
  int64_t per_group, cgo;
  Blocks(const DeformConvShape& s, int64_t max_blocks)
      : per_group(std::min(s.in_per_offset_group(), max_blocks)), cgo(s.in_per_offset_group()) {}
  int64_t count(const DeformConvShape& s) const { return s.offset_groups * per_group; }
  int64_t group(int64_t t) const { return t / per_group; }
  int64_t begin(int64_t t) const { return group(t) * cgo + (t % per_group) * cgo / per_group; }
  int64_t end(int64_t t) const { return group(t) * cgo + (t % per_group + 1) * cgo / per_group; }
};

// The forward's output does not depend on the blocking: as few blocks as keep the
// threads busy, so that each sample is decoded for many channels.
int64_t forward_blocks(const DeformConvShape& s) {
  return std::max<int64_t>(1, (2 * at::get_num_threads() + s.offset_groups - 1) / s.offset_groups);
}

// Calls f(p, sample) for every output pixel p of tap k of offset group g, one image.
template <typename T, typename F>
NASX_ALWAYS_INLINE void for_each_sample(const DeformConvShape& s, const T* offset, const T* mask, int64_t g, int64_t k,
                                        F&& f) {
  const int64_t K = s.taps(), P = s.pixels(), i = k / s.kw, j = k % s.kw;
  const T* off_h = offset + (g * 2 * K + 2 * k) * P;
  const T* off_w = off_h + P;
  const T* m = mask ? mask + (g * K + k) * P : nullptr;
  for (int64_t oy = 0, p = 0; oy < s.out_h; ++oy) {
    const T h0 = static_cast<T>(tap_origin(oy, s.stride_h, s.pad_h, i, s.dil_h));
    for (int64_t ox = 0; ox < s.out_w; ++ox, ++p) {
      const T w0 = static_cast<T>(tap_origin(ox, s.stride_w, s.pad_w, j, s.dil_w));
      f(p, decode(deform_sample<T>(h0 + off_h[p], w0 + off_w[p], s.height, s.width), m ? m[p] : T(1)));
    }
  }
}

template <typename T>
NASX_ALWAYS_INLINE T sample_value(const T* plane, const DecodedSample<T>& d) {
  const auto c = load_corners(plane, d);
  return d.w[0] * c.v[0] + d.w[1] * c.v[1] + d.w[2] * c.v[2] + d.w[3] * c.v[3];
}

// The decoded samples of tap k, offset group g, one image, in pixel order. The
// channel loops then walk one plane at a time, which stays in L1 (walking many
// planes per pixel instead thrashes the cache sets: planes are power-of-two apart).
template <typename T>
void decode_row(const DeformConvShape& s, const T* offset, const T* mask, int64_t g, int64_t k,
                std::vector<DecodedSample<T>>& row) {
  row.resize(s.pixels());
  for_each_sample(s, offset, mask, g, k, [&](int64_t p, const DecodedSample<T>& d) { row[p] = d; });
}

// Dense forward, one image: columns[(c * K + k) * P + p] = mask * sample value.
template <typename T>
void im2col(const DeformConvShape& s, const T* in, const T* offset, const T* mask, T* columns) {
  const Blocks blocks(s, forward_blocks(s));
  const int64_t K = s.taps(), P = s.pixels(), plane = s.height * s.width;
  at::parallel_for(0, blocks.count(s) * K, 1, [&](int64_t r0, int64_t r1) {
    std::vector<DecodedSample<T>> row;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t t = r / K, k = r % K;
      decode_row(s, offset, mask, blocks.group(t), k, row);
      for (int64_t c = blocks.begin(t); c < blocks.end(t); ++c) {
        const T* src = in + c * plane;
        T* col = columns + (c * K + k) * P;
        for (int64_t p = 0; p < P; ++p) {
          const auto& d = row[p];
          const T v = d.any ? sample_value(src, d) : T(0);
          col[p] = mask ? d.mask * v : v;
        }
      }
    }
  });
}

// Depthwise forward, one image: out[o, p] += weight[o, k] * mask * value(channel o / mult), over k.
template <typename T>
void depthwise_forward(const DeformConvShape& s, const T* in, const T* offset, const T* mask, const T* weight, T* out) {
  const Blocks blocks(s, forward_blocks(s));
  const int64_t K = s.taps(), P = s.pixels(), plane = s.height * s.width, mult = s.out_per_group();
  at::parallel_for(0, blocks.count(s), 1, [&](int64_t t0, int64_t t1) {
    std::vector<DecodedSample<T>> row;
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t k = 0; k < K; ++k) {
        decode_row(s, offset, mask, blocks.group(t), k, row);
        for (int64_t c = blocks.begin(t); c < blocks.end(t); ++c) {
          const T* src = in + c * plane;
          for (int64_t o = c * mult; o < (c + 1) * mult; ++o) {
            const T wk = weight[o * K + k];
            T* dst = out + o * P;
            for (int64_t p = 0; p < P; ++p) {
              const auto& d = row[p];
              if (!d.any) continue;
              const T v = sample_value(src, d);
              dst[p] += wk * (mask ? d.mask * v : v);
            }
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
    at::Tensor columns = s.depthwise() ? at::Tensor() : at::empty({s.in_ch * K, P}, pr.input.options());
    const auto w2d = pr.weight.view({s.out_ch, cgk});
    for (int64_t b = 0; b < s.batch; ++b) {
      const T* in = pr.input.const_data_ptr<T>() + b * s.in_ch * s.height * s.width;
      const T* off = pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P;
      const T* m = s.use_mask ? pr.mask.const_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
      auto out_b = output[b].view({s.out_ch, P});
      if (s.depthwise()) {
        depthwise_forward(s, in, off, m, pr.weight.const_data_ptr<T>(), out_b.mutable_data_ptr<T>());
        continue;
      }
      im2col(s, in, off, m, columns.mutable_data_ptr<T>());
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
  const int64_t plane = s.height * s.width;
  const Blocks blocks(s, kMaxBlocks);
  const int64_t tasks = blocks.count(s);
  if (grad.numel() > 0 && s.in_ch > 0) {
    AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "deform_conv2d_backward", [&] {
      using T = scalar_t;
      const bool dense = !s.depthwise();
      at::Tensor columns, grad_columns;
      if (dense) {
        columns = at::empty({s.in_ch * K, P}, opts);
        grad_columns = at::empty({s.in_ch * K, P}, opts);
      }
      std::vector<T> partial(tasks * 3 * K * P);  // per block: d offset_h, d offset_w, d mask
      const auto w2d = pr.weight.view({s.out_ch, cgk});
      auto gw2d = grad_weight.view({s.out_ch, cgk});
      const T* weight = pr.weight.const_data_ptr<T>();
      T* gw = grad_weight.mutable_data_ptr<T>();
      for (int64_t b = 0; b < s.batch; ++b) {
        const T* in = pr.input.const_data_ptr<T>() + b * s.in_ch * plane;
        const T* off = pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P;
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
        T* cols = dense ? columns.mutable_data_ptr<T>() : nullptr;
        const T* gcols = dense ? grad_columns.const_data_ptr<T>() : nullptr;
        at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
          std::vector<T> gc_row(dense ? 0 : P);
          std::vector<DecodedSample<T>> row;
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t c0 = blocks.begin(t), c1 = blocks.end(t);
            for (int64_t k = 0; k < K; ++k) {
              decode_row(s, off, mask, blocks.group(t), k, row);
              T* ph = partial.data() + ((t * 3 + 0) * K + k) * P;
              T* pw = partial.data() + ((t * 3 + 1) * K + k) * P;
              T* pm = partial.data() + ((t * 3 + 2) * K + k) * P;
              std::fill(ph, ph + P, T(0));
              std::fill(pw, pw + P, T(0));
              std::fill(pm, pm + P, T(0));
              for (int64_t c = c0; c < c1; ++c) {
                const T* src = in + c * plane;
                T* gplane = gin + c * plane;
                const T* gc;
                T* col = nullptr;
                if (dense) {
                  gc = gcols + (c * K + k) * P;
                  col = cols + (c * K + k) * P;
                } else {  // depthwise: the column gradient sums this channel's outputs
                  std::fill(gc_row.begin(), gc_row.end(), T(0));
                  for (int64_t o = c * og; o < (c + 1) * og; ++o) {
                    const T wk = weight[o * K + k];
                    for (int64_t p = 0; p < P; ++p) gc_row[p] += wk * go[o * P + p];
                  }
                  gc = gc_row.data();
                }
                // Depthwise with one output per channel: its weight gradient rides along.
                const bool fused_wgrad = !dense && og == 1;
                const T* go_c = go + c * P;
                T wsum = 0;
                for (int64_t p = 0; p < P; ++p) {
                  const auto& d = row[p];
                  if (!d.any) {
                    if (dense) col[p] = T(0);
                    continue;
                  }
                  const auto cr = load_corners(src, d);
                  const T v = d.w[0] * cr.v[0] + d.w[1] * cr.v[1] + d.w[2] * cr.v[2] + d.w[3] * cr.v[3];
                  const T g = gc[p];
                  const T colv = mask ? d.mask * v : v;
                  if (dense) col[p] = colv;
                  if (fused_wgrad) wsum += go_c[p] * colv;
                  const T gm = d.mask * g;
                  if (d.all) {
                    for (int i = 0; i < 4; ++i) gplane[d.s.idx[i]] += d.w[i] * gm;
                  } else {
                    for (int i = 0; i < 4; ++i) {
                      if (d.s.idx[i] >= 0) gplane[d.s.idx[i]] += d.w[i] * gm;
                    }
                  }
                  ph[p] += d.mask * d_dh(d.s, cr) * g;
                  pw[p] += d.mask * d_dw(d.s, cr) * g;
                  pm[p] += g * v;
                }
                if (fused_wgrad) gw[c * K + k] += wsum;
                if (!dense && !fused_wgrad) {  // this block owns its channels' outputs and their weights
                  for (int64_t o = c * og; o < (c + 1) * og; ++o) {
                    T sum = 0;
                    for (int64_t p = 0; p < P; ++p) {
                      const auto& d = row[p];
                      if (d.any) sum += go[o * P + p] * (mask ? d.mask * sample_value(src, d) : sample_value(src, d));
                    }
                    gw[o * K + k] += sum;
                  }
                }
              }
            }
          }
        });
        // Offset and mask gradients: block partial sums, added in block order.
        T* goff = grad_offset.mutable_data_ptr<T>() + b * s.offset_groups * 2 * K * P;
        T* gmask = s.use_mask ? grad_mask.mutable_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
        at::parallel_for(0, s.offset_groups * K, 1, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t g = r / K, k = r % K;
            T* dh = goff + (g * 2 * K + 2 * k) * P;
            T* dw = dh + P;
            T* dm = gmask ? gmask + r * P : nullptr;
            for (int64_t q = 0; q < blocks.per_group; ++q) {
              const int64_t t = g * blocks.per_group + q;
              const T* ah = partial.data() + ((t * 3 + 0) * K + k) * P;
              const T* aw = partial.data() + ((t * 3 + 1) * K + k) * P;
              const T* am = partial.data() + ((t * 3 + 2) * K + k) * P;
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
