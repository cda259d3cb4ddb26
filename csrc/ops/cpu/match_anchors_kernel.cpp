// CPU kernel of match_anchors: torchvision's Matcher without the G x N IoU matrix.
//
// Pass 1 (only with allow_low_quality_matches) finds each GT's best IoU over all
// anchors, GTs in parallel, anchors in structure-of-arrays layout. Pass 2 gives
// every anchor its best GT (first on ties, NaN wins as in torch.max), the Matcher
// label, and restores its match when some GT reaches its own best IoU on it --
// the low-quality rule, ties included. IoUs are recomputed rather than stored:
// O(N + G) memory, and the expression is box_iou's, so they are bit-identical.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/assign_math.h"
#include "ops/cpu/simd.h"

namespace nasx::ops {
namespace {

template <typename T>
struct Cols {
  std::vector<T> x1, y1, x2, y2, area;
  Cols(const T* b, int64_t n) : x1(n), y1(n), x2(n), y2(n), area(n) {
    for (int64_t i = 0; i < n; ++i) {
      x1[i] = b[4 * i];
      y1[i] = b[4 * i + 1];
      x2[i] = b[4 * i + 2];
      y2[i] = b[4 * i + 3];
      area[i] = box_area(x1[i], y1[i], x2[i], y2[i]);
    }
  }
};

// IoU of one GT (given first, as box_iou(gt_boxes, anchors)) with anchors [b, e).
template <typename T>
NASX_ALWAYS_INLINE void gt_row_body(const T* g, T g_area, const Cols<T>& a, int64_t b, int64_t e, T* out) {
  for (int64_t j = b; j < e; ++j) {
    out[j - b] = iou(g[0], g[1], g[2], g[3], g_area, a.x1[j], a.y1[j], a.x2[j], a.y2[j], a.area[j]);
  }
}
NASX_SIMD_CLONES void gt_row(const float* g, float ga, const Cols<float>& a, int64_t b, int64_t e, float* out) {
  gt_row_body(g, ga, a, b, e, out);
}
NASX_SIMD_CLONES void gt_row(const double* g, double ga, const Cols<double>& a, int64_t b, int64_t e, double* out) {
  gt_row_body(g, ga, a, b, e, out);
}

// IoU of every GT with one anchor.
template <typename T>
NASX_ALWAYS_INLINE void anchor_col_body(const Cols<T>& g, const T* a, T a_area, int64_t m, T* out) {
  for (int64_t i = 0; i < m; ++i) {
    out[i] = iou(g.x1[i], g.y1[i], g.x2[i], g.y2[i], g.area[i], a[0], a[1], a[2], a[3], a_area);
  }
}
NASX_SIMD_CLONES void anchor_col(const Cols<float>& g, const float* a, float aa, int64_t m, float* out) {
  anchor_col_body(g, a, aa, m, out);
}
NASX_SIMD_CLONES void anchor_col(const Cols<double>& g, const double* a, double aa, int64_t m, double* out) {
  anchor_col_body(g, a, aa, m, out);
}

std::tuple<at::Tensor, at::Tensor> match_anchors_cpu(const at::Tensor& anchors_in, const at::Tensor& gt_in,
                                                     double high_threshold, double low_threshold,
                                                     bool allow_low_quality_matches) {
  auto in = prepare_match_anchors(anchors_in, gt_in, high_threshold, low_threshold);
  if (in.m == 0) return in.background();  // no GT (torchvision's Matcher raises instead)
  const int64_t n = in.n, m = in.m;
  AT_DISPATCH_FLOATING_TYPES(in.dtype, "match_anchors", [&] {
    using T = scalar_t;
    const T* pa = in.anchors.const_data_ptr<T>();
    const T* pg = in.gts.const_data_ptr<T>();
    const Cols<T> gcols(pg, m);
    std::vector<T> gt_best(m);
    if (allow_low_quality_matches && n > 0) {
      const Cols<T> acols(pa, n);
      constexpr int64_t kBlock = 4096;
      at::parallel_for(0, m, 1, [&](int64_t gb, int64_t ge) {
        std::vector<T> buf(kBlock);
        for (int64_t i = gb; i < ge; ++i) {
          T best = -std::numeric_limits<T>::infinity();
          bool nan = false;
          for (int64_t s = 0; s < n; s += kBlock) {
            const int64_t e = std::min(n, s + kBlock);
            gt_row(pg + 4 * i, gcols.area[i], acols, s, e, buf.data());
            for (int64_t j = 0; j < e - s; ++j) {
              nan |= is_nan(buf[j]);
              best = buf[j] > best ? buf[j] : best;
            }
          }
          gt_best[i] = nan ? std::numeric_limits<T>::quiet_NaN() : best;
        }
      });
    }
    const T high = static_cast<T>(high_threshold), low = static_cast<T>(low_threshold);
    int64_t* pm = in.index.mutable_data_ptr<int64_t>();
    T* pv = in.value.mutable_data_ptr<T>();
    at::parallel_for(0, n, std::max<int64_t>(1, 16384 / m), [&](int64_t b, int64_t e) {
      std::vector<T> col(m);
      for (int64_t j = b; j < e; ++j) {
        const T* a = pa + 4 * j;
        anchor_col(gcols, a, box_area(a[0], a[1], a[2], a[3]), m, col.data());
        int64_t arg = 0;
        bool low_quality = false;
        for (int64_t i = 0; i < m; ++i) {
          if (i > 0 && replaces_max(col[i], col[arg])) arg = i;
          low_quality |= col[i] == gt_best[i];  // false for a NaN best
        }
        const T v = col[arg];
        int64_t label = matcher_label(v, arg, high, low);
        if (allow_low_quality_matches && label < 0 && low_quality) label = arg;
        pm[j] = label;
        pv[j] = v;
      }
    });
  });
  return in.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("match_anchors", &match_anchors_cpu);
}

}  // namespace nasx::ops
