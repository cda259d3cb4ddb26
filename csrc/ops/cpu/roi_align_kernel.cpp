// CPU kernels of roi_align and its backward.
//
// Forward: RoIs in parallel; each RoI computes its bilinear taps once and applies
// them to every channel. Backward: deterministic. Threads own disjoint channel
// ranges, so every gradient plane is written by one thread, visiting RoIs, bins
// and samples in the same order as torchvision's serial loop (bit-identical sums);
// each thread computes a RoI's taps once for all of its channels instead of once
// per channel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "ops/feature_checks.h"
#include "ops/roi_align_math.h"

namespace nasx::ops {
namespace {

template <typename T>
RoiGeometry<T> geometry_of(const T* rois, int64_t r, T scale, int64_t ph, int64_t pw, int64_t sampling_ratio,
                           bool aligned, int64_t batch_size) {
  const auto g = roi_geometry<T>(rois + 5 * r, scale, static_cast<int>(ph), static_cast<int>(pw),
                                 static_cast<int>(sampling_ratio), aligned);
  TORCH_CHECK_VALUE(g.batch >= 0 && g.batch < batch_size, "roi_align: expected rois[:, 0] to be a batch index in [0, ",
                    batch_size, "), got ", rois[5 * r], " in row ", r);
  return g;
}

// Taps of every sample of every bin of one RoI, bin-major, in torchvision's order.
template <typename T>
void roi_taps(const RoiGeometry<T>& g, int64_t ph, int64_t pw, int64_t height, int64_t width, std::vector<Tap<T>>& taps) {
  taps.clear();
  for (int64_t i = 0; i < ph; ++i) {
    for (int64_t j = 0; j < pw; ++j) {
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const T y = g.sample_y(static_cast<int>(i), iy);
        for (int ix = 0; ix < g.grid_w; ++ix) {
          taps.push_back(bilinear_tap<T>(height, width, y, g.sample_x(static_cast<int>(j), ix)));
        }
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

at::Tensor roi_align_cpu(const at::Tensor& input_in, const at::Tensor& rois_in, double spatial_scale, int64_t ph,
                         int64_t pw, int64_t sampling_ratio, bool aligned) {
  const char* op = "roi_align";
  check_float(input_in, op, "input");
  check_dim(input_in, 4, op, "input", "[N, C, H, W]");
  check_roi_align_args(rois_in, spatial_scale, ph, pw, op);
  check_same_device(input_in, "input", rois_in, "rois", op);
  const auto dtype = compute_dtype(input_in.scalar_type());
  const auto input = input_in.to(dtype).contiguous();
  const auto rois = rois_in.to(dtype).contiguous();
  const int64_t batch = input.size(0), channels = input.size(1), height = input.size(2), width = input.size(3);
  check_plane(height, width, op);
  const int64_t num_rois = rois.size(0);
  auto output = at::zeros({num_rois, channels, ph, pw}, input.options());
  if (num_rois == 0 || channels == 0) return output.to(input_in.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(dtype, "roi_align", [&] {
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    const auto scale = static_cast<scalar_t>(spatial_scale);
    const int64_t bins = ph * pw, plane = height * width;
    at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
      std::vector<Tap<scalar_t>> taps;
      for (int64_t n = begin; n < end; ++n) {
        const auto g = geometry_of(r, n, scale, ph, pw, sampling_ratio, aligned, batch);
        roi_taps(g, ph, pw, height, width, taps);
        const int64_t per_bin = static_cast<int64_t>(g.grid_h) * g.grid_w;
        for (int64_t c = 0; c < channels; ++c) {
          const scalar_t* p = in + (g.batch * channels + c) * plane;
          scalar_t* o = out + (n * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            scalar_t acc = 0;
            for (int64_t s = b * per_bin, e = s + per_bin; s < e; ++s) {
              const auto& t = taps[s];
              acc += t.w[0] * p[t.pos[0]] + t.w[1] * p[t.pos[1]] + t.w[2] * p[t.pos[2]] + t.w[3] * p[t.pos[3]];
            }
            o[b] = acc / g.count;
          }
        }
      }
    });
  });
  return output.to(input_in.scalar_type());
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in, double spatial_scale,
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
  const auto dtype = compute_dtype(grad_in.scalar_type());
  const auto grad = grad_in.to(dtype).contiguous();
  const auto rois = rois_in.to(dtype).contiguous();
  auto grad_input = at::zeros({batch, channels, height, width}, grad.options());
  if (num_rois == 0 || channels == 0) return grad_input.to(grad_in.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(dtype, "roi_align_backward", [&] {
    const scalar_t* go = grad.const_data_ptr<scalar_t>();
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    const auto scale = static_cast<scalar_t>(spatial_scale);
    const int64_t bins = ph * pw, plane = height * width;
    at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
      std::vector<Tap<scalar_t>> taps;
      for (int64_t n = 0; n < num_rois; ++n) {
        const auto g = geometry_of(r, n, scale, ph, pw, sampling_ratio, aligned, batch);
        roi_taps(g, ph, pw, height, width, taps);
        const int64_t per_bin = static_cast<int64_t>(g.grid_h) * g.grid_w;
        for (int64_t c = c0; c < c1; ++c) {
          scalar_t* p = gi + (g.batch * channels + c) * plane;
          const scalar_t* o = go + (n * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            const scalar_t gb = o[b];
            for (int64_t s = b * per_bin, e = s + per_bin; s < e; ++s) {
              const auto& t = taps[s];
              if (t.empty) continue;
              for (int k = 0; k < 4; ++k) p[t.pos[k]] += gb * t.w[k] / g.count;
            }
          }
        }
      }
    });
  });
  return grad_input.to(grad_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace nasx::ops
