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
      for_each_bin_tap(g, static_cast<int>(i), static_cast<int>(j), height, width,
                       [&](const Tap<T>& t) { taps.push_back(t); });
    }
  }
}

// One RoI at a time: its geometry and the taps of every sample of every bin,
// bin-major in torchvision's order (per_bin taps a bin), computed once and then
// applied to every channel; the forward and the backward both walk RoIs with it.
template <typename T>
struct RoiTaps {
  const T* rois;
  T scale;
  int64_t ph, pw, sampling_ratio, batch, height, width;
  bool aligned;
  RoiGeometry<T> g;
  int64_t per_bin = 0;
  std::vector<Tap<T>> taps;

  RoiTaps(const RoiAlignProblem& pr, double spatial_scale, int64_t ph_, int64_t pw_, int64_t sampling_ratio_,
          bool aligned_)
      : rois(pr.rois.const_data_ptr<T>()), scale(static_cast<T>(spatial_scale)), ph(ph_), pw(pw_),
        sampling_ratio(sampling_ratio_), batch(pr.batch), height(pr.height), width(pr.width), aligned(aligned_) {}

  void load(int64_t n) {
    g = geometry_of(rois, n, scale, ph, pw, sampling_ratio, aligned, batch);
    roi_taps(g, ph, pw, height, width, taps);
    per_bin = static_cast<int64_t>(g.grid_h) * g.grid_w;
  }
  const Tap<T>* bin_begin(int64_t b) const { return taps.data() + b * per_bin; }
  const Tap<T>* bin_end(int64_t b) const { return taps.data() + (b + 1) * per_bin; }
};

at::Tensor roi_align_cpu(const at::Tensor& input_in, const at::Tensor& rois_in, double spatial_scale, int64_t ph,
                         int64_t pw, int64_t sampling_ratio, bool aligned) {
  auto pr = prepare_roi_align(input_in, rois_in, spatial_scale, ph, pw);
  const int64_t channels = pr.channels, num_rois = pr.num_rois;
  if (pr.out.numel() == 0) return pr.result();
  AT_DISPATCH_FLOATING_TYPES(pr.data.scalar_type(), "roi_align", [&] {
    const scalar_t* in = pr.data.const_data_ptr<scalar_t>();
    scalar_t* out = pr.out.mutable_data_ptr<scalar_t>();
    const int64_t bins = ph * pw, plane = pr.height * pr.width;
    at::parallel_for(0, num_rois, 1, [&](int64_t begin, int64_t end) {
      RoiTaps<scalar_t> roi(pr, spatial_scale, ph, pw, sampling_ratio, aligned);
      for (int64_t n = begin; n < end; ++n) {
        roi.load(n);
        for (int64_t c = 0; c < channels; ++c) {
          const scalar_t* p = in + (roi.g.batch * channels + c) * plane;
          scalar_t* o = out + (n * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            scalar_t acc = 0;
            for (const Tap<scalar_t>* t = roi.bin_begin(b); t != roi.bin_end(b); ++t) {
              acc += t->w[0] * p[t->pos[0]] + t->w[1] * p[t->pos[1]] + t->w[2] * p[t->pos[2]] + t->w[3] * p[t->pos[3]];
            }
            o[b] = acc / roi.g.count;
          }
        }
      }
    });
  });
  return pr.result();
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_in, const at::Tensor& rois_in, double spatial_scale,
                                  int64_t ph, int64_t pw, int64_t batch, int64_t channels, int64_t height,
                                  int64_t width, int64_t sampling_ratio, bool aligned) {
  auto pr = prepare_roi_align_backward(grad_in, rois_in, spatial_scale, ph, pw, batch, channels, height, width);
  const int64_t num_rois = pr.num_rois;
  if (num_rois == 0 || channels == 0) return pr.result();
  AT_DISPATCH_FLOATING_TYPES(pr.data.scalar_type(), "roi_align_backward", [&] {
    const scalar_t* go = pr.data.const_data_ptr<scalar_t>();
    scalar_t* gi = pr.out.mutable_data_ptr<scalar_t>();
    const int64_t bins = ph * pw, plane = height * width;
    at::parallel_for(0, channels, 1, [&](int64_t c0, int64_t c1) {
      RoiTaps<scalar_t> roi(pr, spatial_scale, ph, pw, sampling_ratio, aligned);
      for (int64_t n = 0; n < num_rois; ++n) {
        roi.load(n);
        for (int64_t c = c0; c < c1; ++c) {
          scalar_t* p = gi + (roi.g.batch * channels + c) * plane;
          const scalar_t* o = go + (n * channels + c) * bins;
          for (int64_t b = 0; b < bins; ++b) {
            const scalar_t gb = o[b];
            for (const Tap<scalar_t>* t = roi.bin_begin(b); t != roi.bin_end(b); ++t) {
              if (t->empty) continue;
              for (int k = 0; k < 4; ++k) p[t->pos[k]] += gb * t->w[k] / roi.g.count;
            }
          }
        }
      }
    });
  });
  return pr.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace nasx::ops
