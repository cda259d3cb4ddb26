// CPU kernel of hypervolume: the Lebesgue measure of the region dominated by the
// points and bounded by the reference point (minimisation), computed in float64.
//
// Only points strictly better than the reference in every objective contribute.
//   M = 1  r - min;
//   M = 2  sweep in f0 keeping the lowest f1: O(N log N);
//   M = 3  HV3D: sweep in f2, keeping the (f0, f1) staircase and its area in an
//          ordered map, each insertion adding the area it newly covers: O(N log N);
//   M = 4  HV4D+ (Guerreiro and Fonseca 2018): sweep in f3, adding each point's
//          3-D contribution to the volume of the (f0, f1, f2) front: O(N^2);
//   M >= 5 slicing in the WFG manner (While et al. 2012): with the non-dominated
//          points in decreasing order of the last objective, point i adds
//          (r_last - p_i,last) * (the (M-1)-D volume p_i covers that the later
//          points do not), i.e. its inclusive (M-1)-D volume less the volume of the
//          later points limited to p_i. Those are filtered to the k non-dominated
//          ones first (see limit_nondominated: two O(N M) passes, then checks of
//          the few left), and the recursion runs on k points (a few dozen of 1000
//          on a 5-D sphere). The terms are independent and summed over threads;
//          recursion ends in HV4D+: O(N^2 M + N T(M-1, k)), O(N^(M-2)) at worst.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <map>
#include <numeric>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

// Points of d coordinates, row-major.
struct PointSet {
  int64_t d;
  std::vector<double> x;
  int64_t size() const { return static_cast<int64_t>(x.size()) / d; }
  const double* row(int64_t i) const { return x.data() + i * d; }
};

double hv_1d(const PointSet& s, const double* ref) {
  double lo = ref[0];
  for (int64_t i = 0; i < s.size(); ++i) lo = std::min(lo, s.row(i)[0]);
  return ref[0] - lo;
}

double hv_2d(const PointSet& s, const double* ref) {
  std::vector<int64_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const double *p = s.row(a), *q = s.row(b);
    return p[0] < q[0] || (p[0] == q[0] && p[1] < q[1]);
  });
  double area = 0, low = ref[1];
  for (int64_t i : order) {
    const double* p = s.row(i);
    if (p[1] < low) {
      area += (ref[0] - p[0]) * (low - p[1]);
      low = p[1];
    }
  }
  return area;
}

double hv_3d(const PointSet& s, const double* ref) {
  const int64_t n = s.size();
  // Sorted copies, not sorted indices: the sort then moves through memory in order.
  struct Point3 {
    double z, x, y;
  };
  std::vector<Point3> pts(n);
  for (int64_t k = 0; k < n; ++k) pts[k] = {s.row(k)[2], s.row(k)[0], s.row(k)[1]};
  std::sort(pts.begin(), pts.end(), [](const Point3& a, const Point3& b) { return a.z < b.z; });
  std::map<double, double> steps;  // f0 increasing -> f1 decreasing
  double area = 0, volume = 0;
  for (int64_t k = 0; k < n; ++k) {
    const Point3& p = pts[k];
    const double x = p.x, y = p.y;
    auto at_or_before = steps.upper_bound(x);
    const bool covered = at_or_before != steps.begin() && std::prev(at_or_before)->second <= y;
    if (!covered) {
      auto it = steps.lower_bound(x);
      double height = it == steps.begin() ? ref[1] : std::prev(it)->second;  // staircase level left of x
      double from = x;
      while (it != steps.end() && it->second >= y) {  // steps that p covers
        area += (it->first - from) * (height - y);
        height = it->second;
        from = it->first;
        it = steps.erase(it);
      }
      area += ((it == steps.end() ? ref[0] : it->first) - from) * (height - y);
      steps.emplace_hint(it, x, y);
    }
    const double next = k + 1 < n ? pts[k + 1].z : ref[2];
    volume += area * (next - p.z);
  }
  return volume;
}

// M = 4: HV4D+ (Guerreiro and Fonseca 2018). The points, in increasing f3, sweep
// the 4th axis; `front` holds the (f0, f1, f2) = (x, y, z) projections seen so far
// that no other one weakly dominates, as a list in increasing (z, y, x), and v3
// their 3-D volume, so the 4-D volume is the sum of v3 times the f3 gaps. A new
// point p adds to v3 its 3-D contribution, an HV3D sweep along z restricted to p's
// box. What makes that O(n) is HV3D+'s bookkeeping: each front point q keeps the
// two neighbours it has on the (x, y) staircase of the front points below it in z
// (`right`: least (x, y) among those with a lower y; `left`: least (y, x) among
// those with a lower x), so it is linked into the staircase in O(1) as the sweep
// passes it, the steps it hides being visited once. Inserting p updates those
// neighbours in one pass over the points above it. O(n^2) overall.
struct Node {
  double x, y, z;
  int32_t next, prev;    // the front in increasing (z, y, x)
  int32_t right, left;   // staircase neighbours among the points below (kept)
  int32_t cright, cleft; // links of the staircase being swept (rebuilt per point)
};

// (z, y, x) order of the front.
inline bool before(const Node& a, const Node& b) {
  return a.z < b.z || (a.z == b.z && (a.y < b.y || (a.y == b.y && a.x <= b.x)));
}
inline bool less_xyz(const Node& a, const Node& b) {
  return a.x < b.x || (a.x == b.x && (a.y < b.y || (a.y == b.y && a.z < b.z)));
}
inline bool less_yxz(const Node& a, const Node& b) {
  return a.y < b.y || (a.y == b.y && (a.x < b.x || (a.x == b.x && a.z < b.z)));
}

class Front4D {
 public:
  // Nodes 0 and 1 are the staircase ends A = (-inf, ref1) and B = (ref0, -inf),
  // below everything; node 2 is E = (-inf, -inf, ref2), which covers every box and
  // ends each sweep. The slots of dominated points are reused: the front stays
  // compact in memory, and the sweeps, which follow links, stay in cache.
  explicit Front4D(const double* ref) { reset(ref); }

  // Empties the front, keeping its memory (the slicing runs thousands of small ones).
  void reset(const double* ref) {
    const double inf = std::numeric_limits<double>::infinity();
    nodes_.clear();
    free_.clear();
    nodes_.push_back(Node{-inf, ref[1], -inf, b_, -1, -1, -1, -1, -1});
    nodes_.push_back(Node{ref[0], -inf, -inf, e_, a_, -1, -1, -1, -1});
    nodes_.push_back(Node{-inf, -inf, ref[2], -1, b_, -1, -1, -1, -1});
  }

  // Adds (x, y, z) to the front, returning the 3-D volume it adds (0, and the
  // front unchanged, when a point of the front weakly dominates it).
  double add(double x, double y, double z) {
    std::vector<Node>& v = nodes_;
    Node p{x, y, z, -1, -1, -1, -1, -1, -1};
    // The staircase of the points below p, and p's neighbours on it.
    v[a_].cright = b_, v[b_].cleft = a_;
    int32_t q = v[b_].next;
    for (; q != e_ && before(v[q], p); q = v[q].next) {
      const Node& n = v[q];
      if (n.x <= x && n.y <= y) return 0;  // weakly dominates p
      link(q);
    }
    // p's neighbours are on that staircase (a point hidden there has a step that is
    // a better neighbour): the last step left of x, and the first one below y. Finding
    // them here, not in the loop above, spares it two unpredictable branches a point.
    int32_t left = a_;
    while (v[v[left].cright].x < x) left = v[left].cright;
    int32_t right = v[left].cright;
    while (v[right].y >= y) right = v[right].cright;    // The part of p's box the staircase leaves uncovered; then sweep the points above p.
    double area = newly_covered(right, x, y);
    double volume = 0, last = z;
    const int32_t first_above = q;
    for (;; q = v[q].next) {
      const Node& n = v[q];
      volume += area * (n.z - last);
      if (n.x <= x && n.y <= y) break;  // covers the rest of p's box (E at the end)
      area -= newly_covered(n.right, std::max(n.x, x), std::max(n.y, y));
      link(q);
      last = n.z;
    }
    // Insert p before the points above it; drop those it dominates; p becomes a
    // neighbour of the ones whose staircase it changes.
    p.right = right, p.left = left;
    p.prev = v[first_above].prev, p.next = first_above;
    int32_t i;
    if (free_.empty()) {
      i = static_cast<int32_t>(v.size());
      v.push_back(p);
    } else {
      i = free_.back();
      free_.pop_back();
      v[i] = p;
    }
    v[p.prev].next = i, v[first_above].prev = i;
    for (q = first_above; q != e_; q = v[q].next) {
      Node& n = v[q];
      if (x <= n.x && y <= n.y) {  // no point keeps n as a neighbour: p replaces it
        v[n.prev].next = n.next, v[n.next].prev = n.prev;
        free_.push_back(q);
      } else if (n.x <= x && n.y <= y) {
        break;  // n is a better neighbour than p for every point above it
      } else if (x < n.x) {
        if (less_yxz(p, v[n.left])) n.left = i;  // here y > n.y
      } else if (y < n.y && less_xyz(p, v[n.right])) {
        n.right = i;
      }
    }
    return volume;
  }

 private:
  // Puts q on the staircase between its neighbours, hiding the steps between them.
  void link(int32_t q) {
    Node& n = nodes_[q];
    n.cright = n.right, n.cleft = n.left;
    nodes_[n.right].cleft = q;
    nodes_[n.left].cright = q;
  }

  // Area of [x0, inf) x [y0, inf) under the staircase's steps left of `right`,
  // i.e. what a point with right neighbour `right` and corner (x0, y0) covers anew.
  double newly_covered(int32_t right, double x0, double y0) const {
    double edge = nodes_[right].x, area = 0;
    int32_t s = nodes_[right].cleft;
    for (; nodes_[s].x > x0; s = nodes_[s].cleft) {
      const Node& n = nodes_[s];
      if (n.y > y0) area += (edge - n.x) * (n.y - y0);
      edge = n.x;
    }
    if (edge > x0 && nodes_[s].y > y0) area += (edge - x0) * (nodes_[s].y - y0);
    return area;
  }

  static constexpr int32_t a_ = 0, b_ = 1, e_ = 2;
  std::vector<Node> nodes_;
  std::vector<int32_t> free_;
};

// Memory that the many small HV4D+ runs of the slicing reuse.
struct Scratch4D {
  Front4D front{std::array<double, 3>{}.data()};
  std::vector<std::array<double, 4>> points;  // (f3, f0, f1, f2)
};

double hv_4d(const PointSet& s, const double* ref, Scratch4D& scratch) {
  const int64_t n = s.size();
  // Sorted copies, not sorted indices: the sort then moves through memory in order.
  auto& pts = scratch.points;
  pts.resize(n);
  for (int64_t k = 0; k < n; ++k) pts[k] = {s.row(k)[3], s.row(k)[0], s.row(k)[1], s.row(k)[2]};
  std::sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
  Front4D& front = scratch.front;
  front.reset(ref);
  double v3 = 0, volume = 0;
  for (int64_t k = 0; k < n; ++k) {
    const auto& r = pts[k];
    v3 += front.add(r[1], r[2], r[3]);
    const double next = k + 1 < n ? pts[k + 1][0] : ref[3];
    volume += v3 * (next - r[0]);
  }
  return volume;
}

// a <= o in all e coordinates; E > 0 fixes e at compile time (E = 4 on SSE2: two
// coordinates a compare, and no branch until the answer).
template <int64_t E>
inline bool weakly_dominates(const double* a, const double* o, int64_t e) {
#if defined(__SSE2__)
  if constexpr (E == 4) {
    return (_mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(a), _mm_loadu_pd(o))) &
            _mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(a + 2), _mm_loadu_pd(o + 2)))) == 3;
  }
#endif
  bool le = true;
  for (int64_t j = 0; j < (E > 0 ? E : e); ++j) le &= a[j] <= o[j];
  return le;
}

// Drop dominated and repeated points (minimisation). D > 0 fixes d at compile
// time, so the check unrolls and does not branch per coordinate.
template <int64_t D>
PointSet nondominated_impl(const PointSet& s) {
  const int64_t n = s.size(), d = D > 0 ? D : s.d;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Lexicographic order: a dominator always comes first, so coordinate 0 needs no check.
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::lexicographical_compare(s.row(a), s.row(a) + d, s.row(b), s.row(b) + d);
  });
  PointSet out{d, {}};
  for (int64_t i : order) {
    const double* p = s.row(i);
    bool dominated = false;
    for (int64_t k = 0, f = out.size(); k < f && !dominated; ++k) {
      const double* q = out.x.data() + k * d;
      dominated = weakly_dominates<(D > 0 ? D - 1 : 0)>(q + 1, p + 1, d - 1);  // also drops exact repeats
    }
    if (!dominated) out.x.insert(out.x.end(), p, p + d);
  }
  return out;
}

PointSet nondominated(const PointSet& s) {
  return s.d == 5 ? nondominated_impl<5>(s) : s.d == 6 ? nondominated_impl<6>(s) : nondominated_impl<0>(s);
}

double hv_rec(const PointSet& s, const double* ref, bool parallel, Scratch4D* scratch = nullptr);

// The later points of `sorted` (rows i+1.., d coordinates) limited to p, i.e.
// max(p, q) over the first e = d - 1 coordinates, less those another limited point
// weakly dominates: out is cleared and filled. Limiting makes most of them dominated
// (a few dozen of 1000 survive on a 5-D sphere), so this is where a term's time goes.
// A q <= p in all e coordinates limits to p (covering p's whole box); those <= p in
// all but one, j, limit to z_j = p with z_j[j] = q[j], and the least such q[j], b[j],
// gives the z_j that dominates every limited point with coordinate j >= b[j]. A first
// pass finds b (on a 5-D sphere the z_j dominate 5 in 6 points), the second keeps the
// points below b in every coordinate, checking each against the survivor that last
// dominated one (moved to the front), which usually dominates it too.
// E > 0 fixes e at compile time, so the loops unroll (E = 4, the 5-D case, on SSE2:
// two coordinates a compare).
template <int64_t E>
void limit_nondominated(const PointSet& sorted, int64_t i, PointSet& out, std::vector<int64_t>& kept) {
  const int64_t n = sorted.size(), e = E > 0 ? E : sorted.d - 1;
  const double* p = sorted.row(i);
  out.d = e;
  out.x.clear();
  constexpr double inf = std::numeric_limits<double>::infinity();
  double fixed[E > 0 ? 2 * E : 1];
  std::vector<double> any(E > 0 ? 0 : 2 * e);
  double* q = E > 0 ? fixed : any.data();
  double* b = q + e;
  std::fill(b, b + e, inf);
#if defined(__SSE2__)
  if constexpr (E == 4) {  // the 5-D case, two coordinates an instruction
    const __m128d p01 = _mm_loadu_pd(p), p23 = _mm_loadu_pd(p + 2);
    for (int64_t k = i + 1; k < n; ++k) {
      const double* r = sorted.row(k);
      const int le = _mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(r), p01)) |
                     _mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(r + 2), p23)) << 2;
      if ((0xe880 >> le) & 1) {  // le is 7, 11, 13 or 14 (one coordinate above p) or 15
        if (le == 15) {
          out.x.assign(p, p + e);
          return;
        }
        const int j = std::countr_zero(static_cast<unsigned>(~le));
        b[j] = std::min(b[j], r[j]);
      }
    }
  } else
#endif
  for (int64_t k = i + 1; k < n; ++k) {
    const double* r = sorted.row(k);
    int64_t below = 0;
    for (int64_t j = 0; j < e; ++j) below += r[j] <= p[j];
    if (below >= e - 1) {
      if (below == e) {  // q limits to p itself, which covers the whole box
        out.x.assign(p, p + e);
        return;
      }
      for (int64_t j = 0; j < e; ++j) b[j] = r[j] > p[j] ? std::min(b[j], r[j]) : b[j];
    }
  }
  // The points below b, gathered without branching (which pass is unpredictable).
  kept.resize(n - i);
  int64_t c = 0;
#if defined(__SSE2__)
  if constexpr (E == 4) {
    const __m128d b01 = _mm_loadu_pd(b), b23 = _mm_loadu_pd(b + 2);
    for (int64_t k = i + 1; k < n; ++k) {
      const double* r = sorted.row(k);
      const int lt = _mm_movemask_pd(_mm_cmplt_pd(_mm_loadu_pd(r), b01)) &
                     _mm_movemask_pd(_mm_cmplt_pd(_mm_loadu_pd(r + 2), b23));
      kept[c] = k;
      c += lt == 3;
    }
  } else
#endif
  for (int64_t k = i + 1; k < n; ++k) {
    const double* r = sorted.row(k);
    bool inside = true;
    for (int64_t j = 0; j < e; ++j) inside &= r[j] < b[j];
    kept[c] = k;
    c += inside;
  }
  int64_t f = 0;
  for (int64_t t = 0; t < c; ++t) {
    const double* r = sorted.row(kept[t]);
    for (int64_t j = 0; j < e; ++j) q[j] = std::max(p[j], r[j]);
    double* rows = out.x.data();
    int64_t by = -1;
    for (int64_t s = 0; s < f && by < 0; ++s) {
      const double* o = rows + s * e;
      if (weakly_dominates<E>(o, q, e)) by = s;
    }
    if (by > 0) std::swap_ranges(rows, rows + e, rows + by * e);
    if (by >= 0) continue;
    // q survives: drop the survivors it dominates (none equals q), then add it.
    for (int64_t s = 0; s < f;) {
      const double* o = rows + s * e;
      if (weakly_dominates<E>(q, o, e)) {
        --f;
        std::copy(rows + f * e, rows + (f + 1) * e, rows + s * e);
      } else {
        ++s;
      }
    }
    out.x.resize(f * e);
    out.x.insert(out.x.end(), q, q + e);
    ++f;
  }
  // The z_j last: none of the points kept dominates one, nor is dominated by one
  // (both would need a q <= p), so the checks above leave them out.
  for (int64_t j = 0; j < e; ++j) {
    if (b[j] == inf) continue;
    out.x.insert(out.x.end(), p, p + e);
    out.x[f * e + j] = b[j];
    ++f;
  }
}

// Volume that point i of `sorted` (decreasing last objective) adds to the later
// ones; `limited`, `kept` and `scratch` are memory reused across terms.
double slice_term(const PointSet& sorted, int64_t i, const double* ref, PointSet& limited,
                  std::vector<int64_t>& kept, Scratch4D& scratch) {
  const int64_t e = sorted.d - 1;
  const double* p = sorted.row(i);
  double incl = 1;
  for (int64_t j = 0; j < e; ++j) incl *= ref[j] - p[j];
  if (e == 4) {
    limit_nondominated<4>(sorted, i, limited, kept);
  } else {
    limit_nondominated<0>(sorted, i, limited, kept);
  }
  double covered = 0;
  if (limited.size() == 1) {
    covered = 1;
    for (int64_t j = 0; j < e; ++j) covered *= ref[j] - limited.x[j];
  } else if (limited.size() > 1) {
    covered = hv_rec(limited, ref, false, &scratch);
  }
  return (ref[e] - p[e]) * (incl - covered);
}

double hv_rec(const PointSet& s, const double* ref, bool parallel, Scratch4D* scratch) {
  const int64_t n = s.size(), d = s.d;
  if (n == 0) return 0;
  if (d == 1) return hv_1d(s, ref);
  if (d == 2) return hv_2d(s, ref);
  if (d == 3) return hv_3d(s, ref);
  if (d == 4) {
    if (scratch) return hv_4d(s, ref, *scratch);
    Scratch4D own;
    return hv_4d(s, ref, own);
  }
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s.row(a)[d - 1] > s.row(b)[d - 1]; });
  PointSet sorted{d, std::vector<double>(n * d)};
  for (int64_t k = 0; k < n; ++k) std::copy(s.row(order[k]), s.row(order[k]) + d, sorted.x.begin() + k * d);
  std::vector<double> terms(n);
  auto run = [&](int64_t b, int64_t e) {
    PointSet limited{d - 1, {}};
    std::vector<int64_t> kept;
    Scratch4D own;  // HV4D+ is a leaf of the recursion: a caller's memory can be shared
    Scratch4D& sc = scratch && !parallel ? *scratch : own;
    for (int64_t i = b; i < e; ++i) terms[i] = slice_term(sorted, i, ref, limited, kept, sc);
  };
  if (parallel && n > 64) {
    at::parallel_for(0, n, 4, run);
  } else {
    run(0, n);
  }
  double volume = 0;
  for (double t : terms) volume += t;
  return volume;
}

at::Tensor hypervolume_cpu(const at::Tensor& points_in, const at::Tensor& reference_in) {
  check_hypervolume_inputs(points_in, reference_in);
  check_no_nan(points_in, "hypervolume", "points");
  check_no_nan(reference_in, "hypervolume", "reference");
  const auto pts = points_in.to(at::kDouble).contiguous();
  const auto ref_t = reference_in.to(at::kDouble).contiguous();
  const int64_t n = pts.size(0), d = pts.size(1);
  const double* x = pts.const_data_ptr<double>();
  const double* ref = ref_t.const_data_ptr<double>();
  // Points that do not strictly dominate the reference cover nothing.
  PointSet s{d, {}};
  for (int64_t i = 0; i < n; ++i) {
    const double* p = x + i * d;
    bool inside = true;
    for (int64_t j = 0; j < d && inside; ++j) inside = p[j] < ref[j];
    if (inside) s.x.insert(s.x.end(), p, p + d);
  }
  const double volume = hv_rec(d >= 5 ? nondominated(s) : s, ref, /*parallel=*/true);
  const auto out_dtype = compute_dtype(at::promote_types(points_in.scalar_type(), reference_in.scalar_type()));
  return at::scalar_tensor(volume, points_in.options().dtype(out_dtype));
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) { m.impl("hypervolume", &hypervolume_cpu); }

}  // namespace nasx::ops
