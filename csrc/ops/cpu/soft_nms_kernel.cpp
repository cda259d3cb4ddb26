// CPU kernel of Soft-NMS (Bodla et al. 2017).
//
// Each step selects the highest remaining score (ties: lower index), then decays
// every remaining score by its IoU with the selection and drops what falls below
// score_threshold. The remaining boxes are kept compacted, so a step costs the
// number of boxes still alive; the decay of large sets runs in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/soft_nms_checks.h"

namespace nasx::ops {
namespace {

template <typename T>
struct Alive {
  std::vector<T> x1, y1, x2, y2, area, score;
  std::vector<int64_t> index;
  void move(int64_t dst, int64_t src) {
    x1[dst] = x1[src];
    y1[dst] = y1[src];
    x2[dst] = x2[src];
    y2[dst] = y2[src];
    area[dst] = area[src];
    score[dst] = score[src];
    index[dst] = index[src];
  }
};

template <typename T>
std::tuple<std::vector<int64_t>, std::vector<T>> soft_nms_impl(const T* boxes, const T* scores, int64_t n,
                                                                T iou_threshold, T sigma, T score_threshold,
                                                                SoftNmsMethod method) {
  Alive<T> a;
  for (int64_t i = 0; i < n; ++i) {
    // NaN scores are dropped; so is anything already below the threshold.
    if (std::isnan(scores[i]) || scores[i] < score_threshold) continue;
    const T* b = boxes + 4 * i;
    a.x1.push_back(b[0]);
    a.y1.push_back(b[1]);
    a.x2.push_back(b[2]);
    a.y2.push_back(b[3]);
    a.area.push_back(box_area(b[0], b[1], b[2], b[3]));
    a.score.push_back(scores[i]);
    a.index.push_back(i);
  }
  std::vector<int64_t> keep;
  std::vector<T> kept_scores;
  int64_t alive = static_cast<int64_t>(a.index.size());
  while (alive > 0) {
    int64_t best = 0;
    for (int64_t j = 1; j < alive; ++j) {
      if (a.score[j] > a.score[best] || (a.score[j] == a.score[best] && a.index[j] < a.index[best])) best = j;
    }
    keep.push_back(a.index[best]);
    kept_scores.push_back(a.score[best]);
    const T sx1 = a.x1[best], sy1 = a.y1[best], sx2 = a.x2[best], sy2 = a.y2[best], sa = a.area[best];
    // Remove the selection by moving the last alive box into its slot.
    a.move(best, --alive);
    auto decay = [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        T o = iou(sx1, sy1, sx2, sy2, sa, a.x1[j], a.y1[j], a.x2[j], a.y2[j], a.area[j]);
        if (!(o > T(0))) o = T(0);  // NaN IoU (non-finite coordinates) means no overlap
        const T w = method == SoftNmsMethod::kGaussian ? std::exp(-(o * o) / sigma)
                                                       : (o > iou_threshold ? T(1) - o : T(1));
        a.score[j] *= w;
      }
    };
    if (alive >= 8192) {
      at::parallel_for(0, alive, 2048, decay);
    } else {
      decay(0, alive);
    }
    int64_t w = 0;
    for (int64_t j = 0; j < alive; ++j) {
      if (a.score[j] < score_threshold) continue;
      if (w != j) a.move(w, j);
      ++w;
    }
    alive = w;
  }
  return {std::move(keep), std::move(kept_scores)};
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in,
                                                double iou_threshold, double sigma, double score_threshold,
                                                c10::string_view method_name) {
  const auto method =
      check_soft_nms_inputs(boxes_in, scores_in, iou_threshold, sigma, score_threshold, method_name);
  const auto dtype = compute_dtype(at::promote_types(boxes_in.scalar_type(), scores_in.scalar_type()));
  const auto boxes = boxes_in.to(dtype).contiguous();
  const auto scores = scores_in.to(dtype).contiguous();
  at::Tensor keep_t, scores_t;
  AT_DISPATCH_FLOATING_TYPES(dtype, "soft_nms", [&] {
    auto [keep, kept] = soft_nms_impl<scalar_t>(
        boxes.const_data_ptr<scalar_t>(), scores.const_data_ptr<scalar_t>(), boxes.size(0),
        static_cast<scalar_t>(iou_threshold), static_cast<scalar_t>(sigma),
        static_cast<scalar_t>(score_threshold), method);
    const int64_t k = static_cast<int64_t>(keep.size());
    keep_t = at::empty({k}, at::kLong);
    scores_t = at::empty({k}, scores.options());
    std::copy(keep.begin(), keep.end(), keep_t.mutable_data_ptr<int64_t>());
    std::copy(kept.begin(), kept.end(), scores_t.mutable_data_ptr<scalar_t>());
  });
  return {keep_t, scores_t.to(scores_in.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("soft_nms", &soft_nms_cpu);
}

}  // namespace nasx::ops
