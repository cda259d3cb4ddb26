// CPU kernels of deform_conv2d and its backward.
//
// Work is split into tasks of (image, offset group, block of its channels); a
// task decodes each sample of a tap (position, bilinear weights, mask) once and
// applies it to every channel of its block, one plane at a time. Dense path: the
// tasks fill columns [n, C_in * K, P] for a chunk of n images (K = kH kW taps,
// P = output pixels), then one batched GEMM over the weight groups. Depthwise path
// (groups == C_in): no columns and no GEMM; the outputs are accumulated directly.
// One parallel region per chunk and stage: on a loaded machine every extra
// fork/join waits for the slowest thread.
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
#include <memory>
#include <vector>

#include "ops/deform_conv2d_args.h"
#include "ops/cpu/simd.h"
#include "ops/deform_conv2d_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kMaxBlocks = 8;                // channel blocks per offset group (backward)
constexpr int64_t kChunkBudget = int64_t(1) << 24;  // elements of per-chunk buffers

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

// Dense forward, images [b0, b0 + n): columns[bl, c * K + k, p] = mask * sample value.
template <typename T>
void im2col(const Prepared& pr, int64_t b0, int64_t n, T* columns) {
  const auto& s = pr.s;
  const Blocks blocks(s, forward_blocks(s));
  const int64_t K = s.taps(), P = s.pixels(), plane = s.height * s.width, per_image = blocks.count(s) * K;
  at::parallel_for(0, n * per_image, 1, [&](int64_t r0, int64_t r1) {
    std::vector<DecodedSample<T>> row;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t bl = r / per_image, t = (r % per_image) / K, k = r % K, b = b0 + bl;
      const T* mask = pr.s.use_mask ? pr.mask.const_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
      decode_row(s, pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P, mask, blocks.group(t), k, row);
      for (int64_t c = blocks.begin(t); c < blocks.end(t); ++c) {
        const T* src = pr.input.const_data_ptr<T>() + (b * s.in_ch + c) * plane;
        T* col = columns + ((bl * s.in_ch + c) * K + k) * P;
        for (int64_t p = 0; p < P; ++p) {
          const auto& d = row[p];
          const T v = d.any ? sample_value(src, d) : T(0);
          col[p] = mask ? d.mask * v : v;
        }
      }
    }
  });
}

// Depthwise forward, all images: out[b, o, p] += weight[o, k] * mask * value(channel o / mult), over k.
template <typename T>
void depthwise_forward(const Prepared& pr, T* out) {
  const auto& s = pr.s;
  const Blocks blocks(s, forward_blocks(s));
  const int64_t K = s.taps(), P = s.pixels(), plane = s.height * s.width, mult = s.out_per_group();
  const int64_t per_image = blocks.count(s);
  const T* weight = pr.weight.const_data_ptr<T>();
  at::parallel_for(0, s.batch * per_image, 1, [&](int64_t r0, int64_t r1) {
    std::vector<DecodedSample<T>> row;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / per_image, t = r % per_image;
      const T* mask = pr.s.use_mask ? pr.mask.const_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
      const T* offset = pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P;
      for (int64_t k = 0; k < K; ++k) {
        decode_row(s, offset, mask, blocks.group(t), k, row);
        for (int64_t c = blocks.begin(t); c < blocks.end(t); ++c) {
          const T* src = pr.input.const_data_ptr<T>() + (b * s.in_ch + c) * plane;
          for (int64_t o = c * mult; o < (c + 1) * mult; ++o) {
            const T wk = weight[o * K + k];
            T* dst = out + (b * s.out_ch + o) * P;
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
  // The GEMMs inside must not be autocast (e.g. a backward run under torch.autocast).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto pr = prepare(input_in, weight_in, offset_in, mask_in, bias, stride_h, stride_w, pad_h, pad_w, dil_h,
                          dil_w, "deform_conv2d");
  const auto& s = pr.s;
  auto output = at::zeros({s.batch, s.out_ch, s.out_h, s.out_w}, pr.input.options());
  if (output.numel() == 0) return output.to(input_in.scalar_type());
  const int64_t K = s.taps(), P = s.pixels(), cgk = s.in_per_group() * K;
  AT_DISPATCH_FLOATING_TYPES(pr.input.scalar_type(), "deform_conv2d", [&] {
    using T = scalar_t;
    if (s.depthwise()) {
      depthwise_forward(pr, output.mutable_data_ptr<T>());
      return;
    }
    const auto w = pr.weight.view({1, s.groups, s.out_per_group(), cgk});
    const int64_t chunk = std::max<int64_t>(1, std::min(s.batch, kChunkBudget / (s.in_ch * K * P)));
    auto columns = at::empty({chunk, s.groups, cgk, P}, pr.input.options());
    for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
      const int64_t n = std::min(chunk, s.batch - b0);
      auto cols = columns.narrow(0, 0, n);
      im2col(pr, b0, n, cols.mutable_data_ptr<T>());
      auto dst = output.narrow(0, b0, n).view({n, s.groups, s.out_per_group(), P});
      at::matmul_out(dst, w, cols);
    }
  });
  if (bias.has_value() && bias->defined()) output.add_(bias->to(output.scalar_type()).view({1, s.out_ch, 1, 1}));
  return output.to(input_in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& input_in, const at::Tensor& weight_in, const at::Tensor& offset_in,
    const std::optional<at::Tensor>& mask_in, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dil_h, int64_t dil_w) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto pr = prepare_backward(grad_in, input_in, weight_in, offset_in, mask_in, stride_h, stride_w, pad_h, pad_w,
                                   dil_h, dil_w);
  const auto& s = pr.s;
  const auto opts = pr.input.options();
  const auto& grad = pr.grad;
  auto gr = pr.zero_grads();
  auto& grad_input = gr.input;
  auto& grad_weight = gr.weight;
  auto& grad_offset = gr.offset;
  auto& grad_mask = gr.mask;
  const int64_t K = s.taps(), P = s.pixels(), cgk = s.in_per_group() * K, og = s.out_per_group();
  const int64_t plane = s.height * s.width;
  const Blocks blocks(s, kMaxBlocks);
  const int64_t tasks = blocks.count(s);  // per image
  const bool dense = !s.depthwise();
  if (grad.numel() > 0 && s.in_ch > 0) {
    // Images per chunk: the columns (dense) and the per-block partial sums fit the budget.
    const int64_t per_image = std::max<int64_t>(1, tasks * 3 * K * P + (dense ? 2 * s.in_ch * K * P : 0));
    const int64_t chunk = std::max<int64_t>(1, std::min(s.batch, kChunkBudget / per_image));
    AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "deform_conv2d_backward", [&] {
      using T = scalar_t;
      const auto w = pr.weight.view({1, s.groups, og, cgk});
      at::Tensor columns, grad_columns;
      if (dense) columns = at::empty({chunk, s.groups, cgk, P}, opts);
      // Per image and block: d offset_h, d offset_w, d mask. Every row is cleared before
      // use, so the buffer is not zeroed here (14 MB at the benchmark's size).
      std::unique_ptr<T[]> partial_buf(new T[chunk * tasks * 3 * K * P]);
      T* partial = partial_buf.get();
      std::vector<T> wpart(dense ? 0 : chunk * s.out_ch * K);  // depthwise weight gradient per image
      const T* weight = pr.weight.const_data_ptr<T>();
      const T* go_all = grad.const_data_ptr<T>();
      for (int64_t b0 = 0; b0 < s.batch; b0 += chunk) {
        const int64_t n = std::min(chunk, s.batch - b0);
        const auto go_chunk = grad.narrow(0, b0, n).view({n, s.groups, og, P});
        if (dense) grad_columns = at::matmul(w.transpose(-1, -2), go_chunk).contiguous();  // [n, G, Cg K, P]
        T* cols = dense ? columns.mutable_data_ptr<T>() : nullptr;
        const T* gcols = dense ? grad_columns.const_data_ptr<T>() : nullptr;
        std::fill(wpart.begin(), wpart.end(), T(0));
        at::parallel_for(0, n * tasks, 1, [&](int64_t r0, int64_t r1) {
          std::vector<T> gc_row(dense ? 0 : P);
          std::vector<DecodedSample<T>> row;
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t bl = r / tasks, t = r % tasks, b = b0 + bl;
            const int64_t c0 = blocks.begin(t), c1 = blocks.end(t);
            const T* in = pr.input.const_data_ptr<T>() + b * s.in_ch * plane;
            T* gin = grad_input.mutable_data_ptr<T>() + b * s.in_ch * plane;
            const T* off = pr.offset.const_data_ptr<T>() + b * s.offset_groups * 2 * K * P;
            const T* mask = s.use_mask ? pr.mask.const_data_ptr<T>() + b * s.offset_groups * K * P : nullptr;
            const T* go = go_all + b * s.out_ch * P;
            for (int64_t k = 0; k < K; ++k) {
              decode_row(s, off, mask, blocks.group(t), k, row);
              T* ph = partial + (((bl * tasks + t) * 3 + 0) * K + k) * P;
              T* pw = ph + K * P;
              T* pm = pw + K * P;
              std::fill(ph, ph + P, T(0));
              std::fill(pw, pw + P, T(0));
              if (mask) std::fill(pm, pm + P, T(0));
              for (int64_t c = c0; c < c1; ++c) {
                const T* src = in + c * plane;
                T* gplane = gin + c * plane;
                const T* gc = nullptr;
                T* col = nullptr;
                if (dense) {
                  gc = gcols + ((bl * s.in_ch + c) * K + k) * P;
                  col = cols + ((bl * s.in_ch + c) * K + k) * P;
                } else if (og > 1) {  // depthwise: the column gradient sums this channel's outputs
                  std::fill(gc_row.begin(), gc_row.end(), T(0));
                  for (int64_t o = c * og; o < (c + 1) * og; ++o) {
                    const T wk = weight[o * K + k];
                    for (int64_t p = 0; p < P; ++p) gc_row[p] += wk * go[o * P + p];
                  }
                  gc = gc_row.data();
                }
                // Depthwise with one output per channel: the column gradient is weight * grad,
                // computed in place, and the weight gradient rides along.
                const bool fused_wgrad = !dense && og == 1;
                const T* go_c = go + c * P;
                const T wck = fused_wgrad ? weight[c * K + k] : T(0);
                T wsum = 0;
                for (int64_t p = 0; p < P; ++p) {
                  const auto& d = row[p];
                  if (!d.any) {
                    if (dense) col[p] = T(0);
                    continue;
                  }
                  const auto cr = load_corners(src, d);
                  const T v = d.w[0] * cr.v[0] + d.w[1] * cr.v[1] + d.w[2] * cr.v[2] + d.w[3] * cr.v[3];
                  const T g = fused_wgrad ? wck * go_c[p] : gc[p];
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
                  if (mask) pm[p] += g * v;
                }
                T* wp = dense ? nullptr : wpart.data() + bl * s.out_ch * K;
                if (fused_wgrad) wp[c * K + k] = wsum;
                if (!dense && !fused_wgrad) {  // this block owns its channels' outputs and their weights
                  for (int64_t o = c * og; o < (c + 1) * og; ++o) {
                    T sum = 0;
                    for (int64_t p = 0; p < P; ++p) {
                      const auto& d = row[p];
                      if (d.any) sum += go[o * P + p] * (mask ? d.mask * sample_value(src, d) : sample_value(src, d));
                    }
                    wp[o * K + k] = sum;
                  }
                }
              }
            }
          }
        });
        // Offset and mask gradients: block partial sums, added in block order.
        at::parallel_for(0, n * s.offset_groups * K, 1, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t bl = r / (s.offset_groups * K), g = (r / K) % s.offset_groups, k = r % K, b = b0 + bl;
            T* dh = grad_offset.mutable_data_ptr<T>() + ((b * s.offset_groups + g) * 2 * K + 2 * k) * P;
            T* dw = dh + P;
            T* dm = s.use_mask ? grad_mask.mutable_data_ptr<T>() + ((b * s.offset_groups + g) * K + k) * P : nullptr;
            for (int64_t q = 0; q < blocks.per_group; ++q) {
              const int64_t t = g * blocks.per_group + q;
              const T* ah = partial + (((bl * tasks + t) * 3 + 0) * K + k) * P;
              const T* aw = ah + K * P;
              const T* am = aw + K * P;
              for (int64_t p = 0; p < P; ++p) {
                dh[p] += ah[p];
                dw[p] += aw[p];
                if (dm) dm[p] += am[p];
              }
            }
          }
        });
        if (dense) {  // sum over the chunk's images, in order
          grad_weight.view({s.groups, og, cgk}).add_(at::matmul(go_chunk, columns.narrow(0, 0, n).transpose(-1, -2)).sum(0));
        } else {
          T* gw = grad_weight.mutable_data_ptr<T>();
          for (int64_t bl = 0; bl < n; ++bl) {
            const T* wp = wpart.data() + bl * s.out_ch * K;
            for (int64_t i = 0; i < s.out_ch * K; ++i) gw[i] += wp[i];
          }
        }
      }
    });
  }
  return pr.result(gr);
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_cpu);
  m.impl("_deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace nasx::ops
