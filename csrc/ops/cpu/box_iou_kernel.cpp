// CPU kernels of box_iou and generalized_box_iou: one fused pass per output row,
// the second box set in structure-of-arrays layout so the row loop vectorises.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/cpu/simd.h"

namespace nasx::ops {
namespace {

template <typename T>
struct BoxColumns {
  std::vector<T> x1, y1, x2, y2, area;
  explicit BoxColumns(const T* b, int64_t n) : x1(n), y1(n), x2(n), y2(n), area(n) {
    for (int64_t j = 0; j < n; ++j) {
      x1[j] = b[4 * j];
      y1[j] = b[4 * j + 1];
      x2[j] = b[4 * j + 2];
      y2[j] = b[4 * j + 3];
      area[j] = box_area(x1[j], y1[j], x2[j], y2[j]);
    }
  }
};

template <typename T, bool Generalized>
NASX_ALWAYS_INLINE void row_body(const T* a, const BoxColumns<T>& b, int64_t m, T* out) {
  const T ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3];
  const T area_a = box_area(ax1, ay1, ax2, ay2);
  const T* __restrict bx1 = b.x1.data();
  const T* __restrict by1 = b.y1.data();
  const T* __restrict bx2 = b.x2.data();
  const T* __restrict by2 = b.y2.data();
  const T* __restrict barea = b.area.data();
  for (int64_t j = 0; j < m; ++j) {
    const T inter = intersection(ax1, ay1, ax2, ay2, bx1[j], by1[j], bx2[j], by2[j]);
    const T uni = area_a + barea[j] - inter;
    T v = inter / uni;
    if constexpr (Generalized) {
      // Smallest enclosing box, as torchvision.ops.generalized_box_iou.
      const T w = clamp_min0((ax2 > bx2[j] ? ax2 : bx2[j]) - (ax1 < bx1[j] ? ax1 : bx1[j]));
      const T h = clamp_min0((ay2 > by2[j] ? ay2 : by2[j]) - (ay1 < by1[j] ? ay1 : by1[j]));
      const T enclosing = mul_rn(w, h);
      v = v - (enclosing - uni) / enclosing;
    }
    out[j] = v;
  }
}

NASX_SIMD_CLONES void iou_row(const float* a, const BoxColumns<float>& b, int64_t m, float* out) {
  row_body<float, false>(a, b, m, out);
}
NASX_SIMD_CLONES void iou_row(const double* a, const BoxColumns<double>& b, int64_t m, double* out) {
  row_body<double, false>(a, b, m, out);
}
NASX_SIMD_CLONES void giou_row(const float* a, const BoxColumns<float>& b, int64_t m, float* out) {
  row_body<float, true>(a, b, m, out);
}
NASX_SIMD_CLONES void giou_row(const double* a, const BoxColumns<double>& b, int64_t m, double* out) {
  row_body<double, true>(a, b, m, out);
}

template <bool Generalized>
at::Tensor pairwise_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2, const char* op) {
  auto pr = prepare_pairwise(boxes1, boxes2, op);
  const int64_t n = pr.n, m = pr.m;
  if (n == 0 || m == 0) return pr.result();
  AT_DISPATCH_FLOATING_TYPES(pr.a.scalar_type(), "nasx_box_op", [&] {
    const BoxColumns<scalar_t> cols(pr.b.const_data_ptr<scalar_t>(), m);
    const scalar_t* pa = pr.a.const_data_ptr<scalar_t>();
    scalar_t* po = pr.out.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 16384 / m);
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if constexpr (Generalized) {
          giou_row(pa + 4 * i, cols, m, po + i * m);
        } else {
          iou_row(pa + 4 * i, cols, m, po + i * m);
        }
      }
    });
  });
  return pr.result();
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_cpu<false>(boxes1, boxes2, "box_iou");
}

at::Tensor generalized_box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  return pairwise_cpu<true>(boxes1, boxes2, "generalized_box_iou");
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("box_iou", &box_iou_cpu);
  m.impl("generalized_box_iou", &generalized_box_iou_cpu);
}

}  // namespace nasx::ops
