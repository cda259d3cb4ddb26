// CPU kernel of atss_assign (Zhang et al. 2020).
//
// GTs run in parallel. For each GT and pyramid level, one scan over the level's
// anchors keeps the topk closest centres in a small sorted buffer; the candidates'
// IoUs give the GT's threshold (mean + unbiased std, in double); positives must
// also have their centre inside the GT. An anchor claimed by several GTs takes
// the one with the highest IoU (lower index on ties), resolved in GT order.
// Memory O(N + G * topk * levels): no N x G distance or IoU matrix.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/assign_math.h"

namespace nasx::ops {
namespace {

template <typename T>
struct Positive {
  int64_t anchor;
  T iou;
};

std::tuple<at::Tensor, at::Tensor> atss_assign_cpu(const at::Tensor& anchors_in, at::IntArrayRef per_level,
                                                   const at::Tensor& gt_in, int64_t topk) {
  auto in = prepare_atss_assign(anchors_in, per_level, gt_in, topk);
  in.clear();  // positives are written below; everything else is background
  if (in.n == 0 || in.m == 0) return in.result();
  const int64_t n = in.n, m = in.m;
  std::vector<int64_t> level_begin(per_level.size() + 1, 0);
  for (size_t l = 0; l < per_level.size(); ++l) level_begin[l + 1] = level_begin[l] + per_level[l];
  AT_DISPATCH_FLOATING_TYPES(in.dtype, "atss_assign", [&] {
    using T = scalar_t;
    const T* pa = in.anchors.const_data_ptr<T>();
    const T* pg = in.gts.const_data_ptr<T>();
    std::vector<T> acx(n), acy(n), aarea(n);
    for (int64_t j = 0; j < n; ++j) {
      const T* a = pa + 4 * j;
      acx[j] = (a[0] + a[2]) / T(2);
      acy[j] = (a[1] + a[3]) / T(2);
      aarea[j] = box_area(a[0], a[1], a[2], a[3]);
    }
    const T eps = static_cast<T>(kAtssInsideEps);
    std::vector<std::vector<Positive<T>>> positives(m);
    at::parallel_for(0, m, 1, [&](int64_t gb, int64_t ge) {
      std::vector<T> cand_d;
      std::vector<int64_t> cand_i, cands;
      for (int64_t g = gb; g < ge; ++g) {
        const T* b = pg + 4 * g;
        const T gcx = (b[0] + b[2]) / T(2), gcy = (b[1] + b[3]) / T(2);
        const T g_area = box_area(b[0], b[1], b[2], b[3]);
        cands.clear();
        for (size_t l = 0; l + 1 < level_begin.size(); ++l) {
          const int64_t lb = level_begin[l], le = level_begin[l + 1];
          const int64_t k = std::min<int64_t>(topk, le - lb);
          if (k <= 0) continue;
          // The k closest so far, sorted by `closer`; insertion keeps them sorted.
          cand_d.assign(k, T(0));
          cand_i.assign(k, -1);
          int64_t size = 0;
          for (int64_t j = lb; j < le; ++j) {
            const T d = centre_distance(acx[j], acy[j], gcx, gcy);
            if (size == k && !closer(d, j, cand_d[k - 1], cand_i[k - 1])) continue;
            int64_t pos = size < k ? size++ : k - 1;
            while (pos > 0 && closer(d, j, cand_d[pos - 1], cand_i[pos - 1])) {
              cand_d[pos] = cand_d[pos - 1];
              cand_i[pos] = cand_i[pos - 1];
              --pos;
            }
            cand_d[pos] = d;
            cand_i[pos] = j;
          }
          cands.insert(cands.end(), cand_i.begin(), cand_i.begin() + size);
        }
        const int64_t c = static_cast<int64_t>(cands.size());
        std::vector<T> ious(c);
        for (int64_t q = 0; q < c; ++q) {
          const T* a = pa + 4 * cands[q];
          ious[q] = iou(a[0], a[1], a[2], a[3], aarea[cands[q]], b[0], b[1], b[2], b[3], g_area);
        }
        const double thr = atss_threshold(ious.data(), c);
        for (int64_t q = 0; q < c; ++q) {
          const int64_t j = cands[q];
          if (!(static_cast<double>(ious[q]) >= thr)) continue;
          const T l = acx[j] - b[0], t = acy[j] - b[1], r = b[2] - acx[j], bb = b[3] - acy[j];
          if (l > eps && t > eps && r > eps && bb > eps) positives[g].push_back({j, ious[q]});
        }
      }
    });
    int64_t* pm = in.index.mutable_data_ptr<int64_t>();
    T* pv = in.value.mutable_data_ptr<T>();
    for (int64_t g = 0; g < m; ++g) {  // GT order: ties in IoU keep the lower GT index
      for (const auto& p : positives[g]) {
        if (pm[p.anchor] < 0 || p.iou > pv[p.anchor]) {
          pm[p.anchor] = g;
          pv[p.anchor] = p.iou;
        }
      }
    }
  });
  return in.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("atss_assign", &atss_assign_cpu);
}

}  // namespace nasx::ops
