// CPU kernels of nms and batched_nms.
//
// Greedy NMS keeps box j (in score order) iff no box kept before it overlaps it
// by more than the threshold. torchvision scans, for every kept box, all later
// boxes one pair at a time. Here boxes are taken in panels of kPanel: every box
// of a panel is first tested against the boxes kept in earlier panels -- tests
// that are independent, so they run in parallel and, over a structure-of-arrays
// copy of the kept boxes, 8 IoUs per AVX2 instruction -- and the survivors are
// then resolved in order against what the panel itself kept. The IoU expression
// is torchvision's, so the kept set is identical.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <vector>

#include "ops/box_checks.h"
#include "ops/box_math.h"
#include "ops/cpu/simd.h"

namespace nasx::ops {
namespace {

constexpr int64_t kPanel = 256;
constexpr int64_t kChunk = 64;  // kept boxes tested per vector pass before an early exit

// Boxes in structure-of-arrays layout.
template <typename T>
struct Columns {
  std::vector<T> x1, y1, x2, y2, area;
  explicit Columns(int64_t n = 0) : x1(n), y1(n), x2(n), y2(n), area(n) {}
  void set(int64_t i, const T* b) {
    x1[i] = b[0];
    y1[i] = b[1];
    x2[i] = b[2];
    y2[i] = b[3];
    area[i] = box_area(b[0], b[1], b[2], b[3]);
  }
  void copy_from(int64_t i, const Columns& o, int64_t j) {
    x1[i] = o.x1[j];
    y1[i] = o.y1[j];
    x2[i] = o.x2[j];
    y2[i] = o.y2[j];
    area[i] = o.area[j];
  }
};

// A view of `count` boxes starting at `begin` of some Columns.
template <typename T>
struct Span {
  const T *x1, *y1, *x2, *y2, *area;
  int64_t size;
  Span(const Columns<T>& c, int64_t begin, int64_t count)
      : x1(c.x1.data() + begin), y1(c.y1.data() + begin), x2(c.x2.data() + begin),
        y2(c.y2.data() + begin), area(c.area.data() + begin), size(count) {}
};

template <typename T>
NASX_ALWAYS_INLINE bool overlaps_any_body(const Span<T>& k, const Span<T>& box, int64_t j, T thr) {
  const T bx1 = box.x1[j], by1 = box.y1[j], bx2 = box.x2[j], by2 = box.y2[j], ba = box.area[j];
  for (int64_t s = 0; s < k.size; s += kChunk) {
    const int64_t e = std::min(k.size, s + kChunk);
    int hit = 0;
    for (int64_t t = s; t < e; ++t) {
      hit |= iou(k.x1[t], k.y1[t], k.x2[t], k.y2[t], k.area[t], bx1, by1, bx2, by2, ba) > thr;
    }
    if (hit) return true;
  }
  return false;
}

NASX_SIMD_CLONES bool overlaps_any(const Span<float>& k, const Span<float>& box, int64_t j, float thr) {
  return overlaps_any_body(k, box, j, thr);
}
NASX_SIMD_CLONES bool overlaps_any(const Span<double>& k, const Span<double>& box, int64_t j, double thr) {
  return overlaps_any_body(k, box, j, thr);
}

// Greedy NMS over boxes [begin, begin + n) of `sorted`, already in decreasing
// score order. Sets keep[begin + j] for every kept box.
template <typename T>
void greedy_nms(const Columns<T>& sorted, int64_t begin, int64_t n, T thr, uint8_t* keep, bool parallel) {
  const Span<T> boxes(sorted, begin, n);
  Columns<T> kept(n);
  int64_t num_kept = 0;
  std::vector<uint8_t> removed(kPanel);
  for (int64_t p0 = 0; p0 < n; p0 += kPanel) {
    const int64_t p1 = std::min(n, p0 + kPanel);
    const Span<T> earlier(kept, 0, num_kept);
    auto cross = [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) removed[j - p0] = overlaps_any(earlier, boxes, j, thr);
    };
    if (parallel && num_kept * (p1 - p0) >= 32768) {
      at::parallel_for(p0, p1, 16, cross);
    } else {
      cross(p0, p1);
    }
    const int64_t panel_start = num_kept;
    for (int64_t j = p0; j < p1; ++j) {
      if (removed[j - p0]) continue;
      const Span<T> in_panel(kept, panel_start, num_kept - panel_start);
      if (overlaps_any(in_panel, boxes, j, thr)) continue;
      keep[begin + j] = 1;
      kept.copy_from(num_kept++, sorted, begin + j);
    }
  }
}

// Indices of boxes with a non-NaN score (NaN-scored boxes are never kept).
template <typename T>
std::vector<int64_t> scored_indices(const T* scores, int64_t n) {
  std::vector<int64_t> order;
  order.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(scores[i])) order.push_back(i);
  }
  return order;
}

template <typename T>
Columns<T> gather(const T* boxes, const std::vector<int64_t>& order) {
  Columns<T> c(static_cast<int64_t>(order.size()));
  for (size_t i = 0; i < order.size(); ++i) c.set(static_cast<int64_t>(i), boxes + 4 * order[i]);
  return c;
}

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  auto out = at::empty({static_cast<int64_t>(v.size())}, at::kLong);
  std::copy(v.begin(), v.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, double iou_threshold) {
  check_nms_inputs(boxes_in, scores_in, nullptr, iou_threshold, "nms");
  const auto dtype = compute_dtype(at::promote_types(boxes_in.scalar_type(), scores_in.scalar_type()));
  const auto boxes = boxes_in.to(dtype).contiguous();
  const auto scores = scores_in.to(dtype).contiguous();
  std::vector<int64_t> result;
  AT_DISPATCH_FLOATING_TYPES(dtype, "nms", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    auto order = scored_indices(s, scores.size(0));
    // Decreasing score; equal scores keep the lower index first.
    std::sort(order.begin(), order.end(), [s](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
    const auto sorted = gather(boxes.const_data_ptr<scalar_t>(), order);
    const int64_t n = static_cast<int64_t>(order.size());
    std::vector<uint8_t> keep(n, 0);
    greedy_nms(sorted, 0, n, threshold_as<scalar_t>(iou_threshold), keep.data(), /*parallel=*/true);
    for (int64_t j = 0; j < n; ++j) {
      if (keep[j]) result.push_back(order[j]);
    }
  });
  return to_tensor(result);
}

// Per-category NMS: boxes are grouped by category (score order kept inside each
// group) and the groups are suppressed independently, in parallel, largest first.
at::Tensor batched_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor& idxs_in,
                           double iou_threshold) {
  check_nms_inputs(boxes_in, scores_in, &idxs_in, iou_threshold, "batched_nms");
  const auto dtype = compute_dtype(at::promote_types(boxes_in.scalar_type(), scores_in.scalar_type()));
  const auto boxes = boxes_in.to(dtype).contiguous();
  const auto scores = scores_in.to(dtype).contiguous();
  const auto idxs = idxs_in.to(at::kLong).contiguous();
  std::vector<int64_t> result;
  AT_DISPATCH_FLOATING_TYPES(dtype, "batched_nms", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const int64_t* c = idxs.const_data_ptr<int64_t>();
    auto order = scored_indices(s, scores.size(0));
    std::sort(order.begin(), order.end(), [s, c](int64_t a, int64_t b) {
      if (c[a] != c[b]) return c[a] < c[b];
      return s[a] > s[b] || (s[a] == s[b] && a < b);
    });
    const int64_t n = static_cast<int64_t>(order.size());
    std::vector<std::pair<int64_t, int64_t>> groups;  // (begin, size)
    for (int64_t g = 0; g < n;) {
      int64_t e = g + 1;
      while (e < n && c[order[e]] == c[order[g]]) ++e;
      groups.emplace_back(g, e - g);
      g = e;
    }
    std::sort(groups.begin(), groups.end(), [](auto& a, auto& b) { return a.second > b.second; });
    const auto sorted = gather(boxes.const_data_ptr<scalar_t>(), order);
    const scalar_t thr = threshold_as<scalar_t>(iou_threshold);
    std::vector<uint8_t> keep(n, 0);
    const int64_t num_groups = static_cast<int64_t>(groups.size());
    // A group holding half the boxes gets all threads to itself ...
    int64_t first = 0;
    for (; first < num_groups && 2 * groups[first].second >= n; ++first) {
      greedy_nms(sorted, groups[first].first, groups[first].second, thr, keep.data(), /*parallel=*/true);
    }
    // ... the rest are scheduled dynamically, each thread taking the next largest group.
    std::atomic<int64_t> next{first};
    at::parallel_for(0, std::min<int64_t>(num_groups - first, at::get_num_threads()), 1, [&](int64_t, int64_t) {
      for (int64_t g; (g = next.fetch_add(1)) < num_groups;) {
        greedy_nms(sorted, groups[g].first, groups[g].second, thr, keep.data(), /*parallel=*/false);
      }
    });
    for (int64_t j = 0; j < n; ++j) {
      if (keep[j]) result.push_back(order[j]);
    }
    std::sort(result.begin(), result.end(), [s](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
  });
  return to_tensor(result);
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace nasx::ops
