// CPU kernels of fcos_targets and fcos_targets_batched.
//
// The usual vectorised form builds P x G tensors of (l, t, r, b), masks and areas
// and takes an argmin over GTs. Here every point scans the GTs of its image once,
// keeping only the smallest-area candidate so far: O(P + G) memory, one pass, and
// points run in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/fcos_math.h"

namespace nasx::ops {
namespace {

struct FcosOut {
  at::Tensor gt_index, reg_targets, centerness;
};

// gt_boxes [B, G, 4] (contiguous, compute dtype), valid [B, G] bool or undefined.
FcosOut fcos_cpu(const at::Tensor& points_in, const at::Tensor& strides_in, const at::Tensor& ranges_in,
                 const at::Tensor& gt_in, const at::Tensor& valid_in, std::optional<double> center_radius) {
  const auto out_dtype = at::promote_types(points_in.scalar_type(), gt_in.scalar_type());
  const auto dtype = compute_dtype(out_dtype);
  const auto points = points_in.to(dtype).contiguous();
  const auto strides = strides_in.to(dtype).contiguous();
  const auto ranges = ranges_in.to(dtype).contiguous();
  const auto gts = gt_in.to(dtype).contiguous();
  const auto valid = valid_in.defined() ? valid_in.to(at::kBool).contiguous() : valid_in;
  const int64_t B = gts.size(0), G = gts.size(1), P = points.size(0);
  auto gt_index = at::empty({B, P}, points.options().dtype(at::kLong));
  auto reg = at::empty({B, P, 4}, points.options());
  auto ctr = at::empty({B, P}, points.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "fcos_targets", [&] {
    using T = scalar_t;
    // The valid GTs of each image, in index order (so ties go to the lower index).
    std::vector<FcosGt<T>> boxes;
    std::vector<int64_t> index, offset(B + 1, 0);
    boxes.reserve(B * G);
    index.reserve(B * G);
    const T* pg = gts.const_data_ptr<T>();
    const bool* pv = valid.defined() ? valid.const_data_ptr<bool>() : nullptr;
    for (int64_t i = 0; i < B; ++i) {
      for (int64_t g = 0; g < G; ++g) {
        if (pv && !pv[i * G + g]) continue;
        boxes.push_back(make_fcos_gt(pg + 4 * (i * G + g)));
        index.push_back(g);
      }
      offset[i + 1] = static_cast<int64_t>(boxes.size());
    }
    const T* pp = points.const_data_ptr<T>();
    const T* ps = strides.const_data_ptr<T>();
    const T* pr = ranges.const_data_ptr<T>();
    const bool center = center_radius.has_value();
    const T radius = static_cast<T>(center ? *center_radius : 0.0);
    int64_t* out_idx = gt_index.mutable_data_ptr<int64_t>();
    T* out_reg = reg.mutable_data_ptr<T>();
    T* out_ctr = ctr.mutable_data_ptr<T>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, G));
    at::parallel_for(0, B * P, grain, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t i = k / P, p = k - i * P;
        const T x = pp[2 * p], y = pp[2 * p + 1];
        const T half = fcos_half_size(ps[p], center, radius);
        const T lo = pr[2 * p], hi = pr[2 * p + 1];
        int64_t best = -1;
        T best_area = T(0);
        for (int64_t j = offset[i]; j < offset[i + 1]; ++j) {
          const FcosGt<T>& g = boxes[j];
          // Smallest area wins; strict '<' keeps the lower index on ties.
          if ((best < 0 || g.area < best_area) && fcos_candidate(x, y, half, lo, hi, g)) {
            best = j;
            best_area = g.area;
          }
        }
        if (best < 0) {
          out_idx[k] = -1;
          for (int c = 0; c < 4; ++c) out_reg[4 * k + c] = T(0);
          out_ctr[k] = T(0);
        } else {
          out_idx[k] = index[best];
          fcos_encode(x, y, boxes[best], out_reg + 4 * k, out_ctr + k);
        }
      }
    });
  });
  if (dtype != out_dtype) {
    reg = reg.to(out_dtype);
    ctr = ctr.to(out_dtype);
  }
  return {gt_index, reg, ctr};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fcos_targets_cpu(const at::Tensor& points, const at::Tensor& strides,
                                                                const at::Tensor& size_ranges,
                                                                const at::Tensor& gt_boxes,
                                                                std::optional<double> center_radius) {
  const char* op = "fcos_targets";
  check_fcos_points(points, strides, size_ranges, op);
  check_boxes(gt_boxes, op, "gt_boxes");
  check_same_device(points, "points", gt_boxes, "gt_boxes", op);
  check_center_radius(center_radius, op);
  auto out = fcos_cpu(points, strides, size_ranges, gt_boxes.unsqueeze(0), at::Tensor(), center_radius);
  return {out.gt_index.squeeze(0), out.reg_targets.squeeze(0), out.centerness.squeeze(0)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fcos_targets_batched_cpu(
    const at::Tensor& points, const at::Tensor& strides, const at::Tensor& size_ranges, const at::Tensor& gt_boxes,
    const at::Tensor& gt_valid, std::optional<double> center_radius) {
  const char* op = "fcos_targets_batched";
  check_fcos_points(points, strides, size_ranges, op);
  check_batched_gt(gt_boxes, gt_valid, op);
  check_same_device(points, "points", gt_boxes, "gt_boxes", op);
  check_same_device(points, "points", gt_valid, "gt_valid", op);
  check_center_radius(center_radius, op);
  auto out = fcos_cpu(points, strides, size_ranges, gt_boxes, gt_valid, center_radius);
  return {out.gt_index, out.reg_targets, out.centerness};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("fcos_targets", &fcos_targets_cpu);
  m.impl("fcos_targets_batched", &fcos_targets_batched_cpu);
}

}  // namespace nasx::ops
