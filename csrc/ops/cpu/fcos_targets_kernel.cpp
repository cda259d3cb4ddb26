// CPU kernels of fcos_targets and fcos_targets_batched.
//
// The usual vectorised form builds P x G tensors of (l, t, r, b), masks and areas
// and takes an argmin over GTs. Here a point only looks at the GTs whose box can
// hold it: a point is a candidate for a GT only strictly inside the GT's box
// (fcos_candidate tests x1 < x < x2 and y1 < y < y2, or a square clipped to the
// box), so a uniform grid over the points lists, per cell, the GTs whose box
// reaches into the cell, in index order. Each point scans its cell's list, keeping
// the smallest-area candidate; the answer is the one a scan over all GTs gives,
// for about (G x the fraction of the image a box covers) tests per point instead
// of G. Memory O(P + G + list entries), bounded below; points run in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/fcos_math.h"

namespace nasx::ops {
namespace {

// A uniform nx x ny grid over the points' bounding box. cell() is monotone in
// each coordinate (rounded subtraction and a product by a positive constant are
// monotone, so is floor, so is the clamp), so every x in (x1, x2) lands in a
// column between cell_x(x1) and cell_x(x2): a GT listed in that range of
// columns (and rows) is in the list of every cell that can hold its candidates.
struct Grid {
  double x0 = 0, y0 = 0, sx = 0, sy = 0;
  int64_t nx = 1, ny = 1;

  static int64_t bin(double v, double origin, double scale, int64_t n) {
    const double t = (v - origin) * scale;
    if (!(t >= 0)) return 0;  // also NaN: a NaN coordinate is no candidate anywhere
    return t >= static_cast<double>(n) ? n - 1 : static_cast<int64_t>(t);
  }
  int64_t col(double x) const { return bin(x, x0, sx, nx); }
  int64_t row(double y) const { return bin(y, y0, sy, ny); }
  int64_t cell(double x, double y) const { return row(y) * nx + col(x); }
  int64_t cells() const { return nx * ny; }
};

// About `target` cells over the finite points, shaped like their bounding box.
template <typename T>
Grid make_grid(const T* points, int64_t P, int64_t target) {
  double lo[2] = {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
  double hi[2] = {-lo[0], -lo[1]};
  for (int64_t p = 0; p < P; ++p) {
    for (int d = 0; d < 2; ++d) {
      const double v = points[2 * p + d];
      if (std::isfinite(v)) {
        lo[d] = std::min(lo[d], v);
        hi[d] = std::max(hi[d], v);
      }
    }
  }
  Grid g;
  if (!(hi[0] >= lo[0]) || !(hi[1] >= lo[1])) return g;  // no finite point: one cell
  const double w = hi[0] - lo[0], h = hi[1] - lo[1];
  if (w > 0 && h > 0) {
    g.nx = std::clamp<int64_t>(std::llround(std::sqrt(target * w / h)), 1, target);
    g.ny = std::clamp<int64_t>(target / g.nx, 1, target);
  } else if (w > 0) {
    g.nx = target;
  } else if (h > 0) {
    g.ny = target;
  }
  g.x0 = lo[0];
  g.y0 = lo[1];
  g.sx = w > 0 ? static_cast<double>(g.nx) / w : 0.0;
  g.sy = h > 0 ? static_cast<double>(g.ny) / h : 0.0;
  return g;
}

// The column/row span of one GT box; a NaN end spans to that side's edge.
struct Span {
  int64_t c0, c1, r0, r1;
  int64_t cells() const { return (c1 - c0 + 1) * (r1 - r0 + 1); }
};

template <typename T>
Span span_of(const Grid& grid, const FcosGt<T>& b) {
  Span s;
  s.c0 = std::isnan(b.x1) ? 0 : grid.col(b.x1);
  s.c1 = std::isnan(b.x2) ? grid.nx - 1 : grid.col(b.x2);
  s.r0 = std::isnan(b.y1) ? 0 : grid.row(b.y1);
  s.r1 = std::isnan(b.y2) ? grid.ny - 1 : grid.row(b.y2);
  if (s.c1 < s.c0) s.c1 = s.c0 - 1;  // an empty (inverted) box: no cells
  if (s.r1 < s.r0) s.r1 = s.r0 - 1;
  return s;
}

// Per image, per cell: the indices (into the image's GT list) of the GTs that
// reach into the cell, ascending. CSR layout: list of cell c = entries[begin[c], begin[c + 1]).
struct CellLists {
  std::vector<int64_t> begin;
  std::vector<int32_t> entries;
};

template <typename T>
void build_lists(const Grid& grid, const FcosGt<T>* boxes, int64_t count, CellLists& out) {
  out.begin.assign(grid.cells() + 1, 0);
  std::vector<Span> spans(count);
  for (int64_t j = 0; j < count; ++j) {
    spans[j] = span_of(grid, boxes[j]);
    for (int64_t r = spans[j].r0; r <= spans[j].r1; ++r) {
      for (int64_t c = spans[j].c0; c <= spans[j].c1; ++c) ++out.begin[r * grid.nx + c + 1];
    }
  }
  for (int64_t c = 0; c < grid.cells(); ++c) out.begin[c + 1] += out.begin[c];
  out.entries.resize(out.begin[grid.cells()]);
  std::vector<int64_t> fill(out.begin.begin(), out.begin.end() - 1);
  for (int64_t j = 0; j < count; ++j) {  // ascending j: each list stays in index order
    for (int64_t r = spans[j].r0; r <= spans[j].r1; ++r) {
      for (int64_t c = spans[j].c0; c <= spans[j].c1; ++c) out.entries[fill[r * grid.nx + c]++] = static_cast<int32_t>(j);
    }
  }
}

// List entries of a grid, summed over images; used to coarsen a grid whose lists
// would grow past the memory budget (many large GTs).
template <typename T>
int64_t entries_of(const Grid& grid, const std::vector<FcosGt<T>>& boxes) {
  int64_t total = 0;
  for (const auto& b : boxes) total += span_of(grid, b).cells();
  return total;
}

void fcos_cpu(FcosProblem& f) {
  const int64_t B = f.B, G = f.G, P = f.P;
  AT_DISPATCH_FLOATING_TYPES(f.points.scalar_type(), "fcos_targets", [&] {
    using T = scalar_t;
    // The valid GTs of each image, in index order (so ties go to the lower index).
    std::vector<FcosGt<T>> boxes;
    std::vector<int64_t> index, offset(B + 1, 0);
    boxes.reserve(B * G);
    index.reserve(B * G);
    const T* pg = f.gts.const_data_ptr<T>();
    const bool* pv = f.valid.defined() ? f.valid.const_data_ptr<bool>() : nullptr;
    for (int64_t i = 0; i < B; ++i) {
      for (int64_t g = 0; g < G; ++g) {
        if (pv && !pv[i * G + g]) continue;
        boxes.push_back(make_fcos_gt(pg + 4 * (i * G + g)));
        index.push_back(g);
      }
      offset[i + 1] = static_cast<int64_t>(boxes.size());
    }
    const T* pp = f.points.const_data_ptr<T>();
    // About 8 points a cell; halve the resolution while the lists would exceed
    // 16 entries per point and GT on average (never more than one grid cell per GT).
    Grid grid = make_grid(pp, P, std::clamp<int64_t>(P / 8, 1, 1 << 16));
    const int64_t budget = 16 * (P + static_cast<int64_t>(boxes.size())) + grid.cells() * B;
    while (grid.cells() > 1 && entries_of(grid, boxes) > budget) {
      grid = make_grid(pp, P, std::max<int64_t>(1, grid.cells() / 4));
    }
    std::vector<CellLists> lists(B);
    at::parallel_for(0, B, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) build_lists(grid, boxes.data() + offset[i], offset[i + 1] - offset[i], lists[i]);
    });
    const T* ps = f.strides.const_data_ptr<T>();
    const T* pr = f.ranges.const_data_ptr<T>();
    const T radius = static_cast<T>(f.radius);
    const bool center = f.center;
    int64_t* out_idx = f.gt_index.mutable_data_ptr<int64_t>();
    T* out_reg = f.reg.mutable_data_ptr<T>();
    T* out_ctr = f.ctr.mutable_data_ptr<T>();
    at::parallel_for(0, B * P, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t i = k / P, p = k - i * P;
        const T x = pp[2 * p], y = pp[2 * p + 1];
        const T half = fcos_half_size(ps[p], center, radius);
        const T lo = pr[2 * p], hi = pr[2 * p + 1];
        const FcosGt<T>* image = boxes.data() + offset[i];
        const CellLists& cl = lists[i];
        const int64_t c = grid.cell(x, y);
        int64_t best = -1;
        T best_area = T(0);
        for (int64_t e = cl.begin[c]; e < cl.begin[c + 1]; ++e) {
          const int64_t j = cl.entries[e];
          const FcosGt<T>& g = image[j];
          // Smallest area wins; strict '<' keeps the lower index on ties.
          if ((best < 0 || g.area < best_area) && fcos_candidate(x, y, half, lo, hi, g)) {
            best = j;
            best_area = g.area;
          }
        }
        if (best < 0) {
          out_idx[k] = -1;
          for (int d = 0; d < 4; ++d) out_reg[4 * k + d] = T(0);
          out_ctr[k] = T(0);
        } else {
          out_idx[k] = index[offset[i] + best];
          fcos_encode(x, y, image[best], out_reg + 4 * k, out_ctr + k);
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("fcos_targets", &fcos_targets_entry<fcos_cpu>);
  m.impl("fcos_targets_batched", &fcos_targets_batched_entry<fcos_cpu>);
}

}  // namespace nasx::ops
