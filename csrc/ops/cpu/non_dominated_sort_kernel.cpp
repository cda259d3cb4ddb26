// CPU kernel of non_dominated_sort: the Pareto rank of every point (0 = first front).
//
// p dominates q when p <= q in every objective and p != q. Equal points share a
// rank. After a lexicographic sort every dominator of p comes before p, so the
// rank of p is 1 + the highest rank among earlier points that dominate it -- and
// the fronts that hold a dominator of p are always 0..rank(p)-1 (a dominator in
// front k is itself dominated by something in front k-1), so that rank can be
// found by binary search over the fronts. What differs by M is how "does front k
// hold a dominator of p" is answered:
//   M = 1  a dense rank of the values;
//   M = 2  the front's smallest f1 so far (earlier points already have f0 <= p's):
//          O(N log N);
//   M = 3  the front's 2-D staircase of (f1, f2) in an ordered map: O(N log^2 N);
//   M >= 4 ENS-BS (Zhang et al. 2015): scan the front, on dense integer ranks of
//          each objective, 8 comparisons per AVX2 instruction; points are taken in
//          blocks whose searches against the earlier fronts run in parallel, and
//          dominance inside a block is then resolved in order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <vector>

#include "ops/cpu/simd.h"
#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

constexpr int64_t kParallelSort = 1 << 15;  // below this, one thread sorts faster than two merge

// Sorts v with cmp on all threads: chunks sorted in parallel, then merged pairwise.
template <typename V, typename Cmp>
void parallel_sort(std::vector<V>& v, Cmp cmp) {
  const int64_t n = static_cast<int64_t>(v.size());
  const int64_t parts = std::min<int64_t>(at::get_num_threads(), n / kParallelSort);
  if (parts <= 1) {
    std::sort(v.begin(), v.end(), cmp);
    return;
  }
  std::vector<int64_t> bounds(parts + 1);
  for (int64_t p = 0; p <= parts; ++p) bounds[p] = n * p / parts;
  at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) std::sort(v.begin() + bounds[p], v.begin() + bounds[p + 1], cmp);
  });
  for (int64_t width = 1; width < parts; width *= 2) {
    const int64_t pairs = (parts + 2 * width - 1) / (2 * width);
    at::parallel_for(0, pairs, 1, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        const int64_t lo = 2 * width * q, mid = std::min(parts, lo + width), hi = std::min(parts, lo + 2 * width);
        if (mid < hi) std::inplace_merge(v.begin() + bounds[lo], v.begin() + bounds[mid], v.begin() + bounds[hi], cmp);
      }
    });
  }
}

template <typename T>
void check_finite_order(const T* x, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    TORCH_CHECK_VALUE(!std::isnan(x[i]), "non_dominated_sort: objectives contains NaN; Pareto ops need ordered "
                                         "values (drop or replace NaN rows first)");
  }
}

// ---- M = 1 ------------------------------------------------------------------
template <typename T>
void rank_1d(const T* x, int64_t n, int64_t* rank) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [x](int64_t a, int64_t b) { return x[a] < x[b]; });
  int64_t r = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (k > 0 && x[order[k]] != x[order[k - 1]]) ++r;
    rank[order[k]] = r;
  }
}

// ---- M = 2 ------------------------------------------------------------------
template <typename T>
struct Row2 {
  T a, b;
  int64_t i;
};

template <typename T>
void rank_2d(const T* x, int64_t n, int64_t* rank) {
  std::vector<Row2<T>> rows(n);
  for (int64_t i = 0; i < n; ++i) rows[i] = {x[2 * i], x[2 * i + 1], i};
  parallel_sort(rows, [](const Row2<T>& p, const Row2<T>& q) { return p.a < q.a || (p.a == q.a && p.b < q.b); });
  // min_b[k]: smallest f1 in front k so far; non-decreasing in k.
  std::vector<T> min_b;
  for (int64_t k = 0; k < n; ++k) {
    const Row2<T>& p = rows[k];
    if (k > 0 && p.a == rows[k - 1].a && p.b == rows[k - 1].b) {
      rank[p.i] = rank[rows[k - 1].i];
      continue;
    }
    // First front whose smallest f1 exceeds p's: no earlier point of it is <= p.
    const int64_t r = std::upper_bound(min_b.begin(), min_b.end(), p.b) - min_b.begin();
    if (r == static_cast<int64_t>(min_b.size())) {
      min_b.push_back(p.b);
    } else {
      min_b[r] = std::min(min_b[r], p.b);
    }
    rank[p.i] = r;
  }
}

// ---- M = 3 ------------------------------------------------------------------
template <typename T>
struct Row3 {
  T a, b, c;
  int64_t i;
};

// The (f1, f2) staircase of one front: keys f1 increasing, values f2 decreasing.
template <typename T>
struct Staircase {
  std::map<T, T> steps;
  // Some point of the front has f1 <= b and f2 <= c.
  bool covers(T b, T c) const {
    auto it = steps.upper_bound(b);
    if (it == steps.begin()) return false;
    return std::prev(it)->second <= c;
  }
  // (b, c) is not covered; drop the steps it covers and add it.
  void insert(T b, T c) {
    auto it = steps.lower_bound(b);
    while (it != steps.end() && it->second >= c) it = steps.erase(it);
    steps.emplace_hint(it, b, c);
  }
};

template <typename T>
void rank_3d(const T* x, int64_t n, int64_t* rank) {
  std::vector<Row3<T>> rows(n);
  for (int64_t i = 0; i < n; ++i) rows[i] = {x[3 * i], x[3 * i + 1], x[3 * i + 2], i};
  parallel_sort(rows, [](const Row3<T>& p, const Row3<T>& q) {
    if (p.a != q.a) return p.a < q.a;
    if (p.b != q.b) return p.b < q.b;
    return p.c < q.c;
  });
  std::vector<Staircase<T>> fronts;
  for (int64_t k = 0; k < n; ++k) {
    const Row3<T>& p = rows[k];
    if (k > 0 && p.a == rows[k - 1].a && p.b == rows[k - 1].b && p.c == rows[k - 1].c) {
      rank[p.i] = rank[rows[k - 1].i];
      continue;
    }
    int64_t lo = 0, hi = static_cast<int64_t>(fronts.size());
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (fronts[mid].covers(p.b, p.c)) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (lo == static_cast<int64_t>(fronts.size())) fronts.emplace_back();
    fronts[lo].insert(p.b, p.c);
    rank[p.i] = lo;
  }
}

// ---- M >= 4 -----------------------------------------------------------------
constexpr int64_t kBlock = 256;  // points whose front searches run in parallel
constexpr int64_t kChunk = 256;  // front members tested per vector pass before an early exit

// Dense integer rank of every value of column j (equal values, equal ranks).
template <typename T>
void dense_ranks(const T* x, int64_t n, int64_t m, int64_t j, int32_t* out) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[a * m + j] < x[b * m + j]; });
  int32_t r = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (k > 0 && x[order[k] * m + j] != x[order[k - 1] * m + j]) ++r;
    out[order[k] * m + j] = r;
  }
}

// Members of one front, column-major over objectives 1..M-1 (objective 0 needs no
// test: every earlier point has f0 <= p's).
struct FrontColumns {
  std::vector<std::vector<int32_t>> cols;
  explicit FrontColumns(int64_t m) : cols(m - 1) {}
  int64_t size() const { return static_cast<int64_t>(cols[0].size()); }
  void add(const int32_t* p) {
    for (size_t j = 0; j < cols.size(); ++j) cols[j].push_back(p[j + 1]);
  }
};

// Whether any of members [begin, end) of the columns is <= p in objectives 1..M-1.
NASX_SIMD_CLONES bool any_le(const int32_t* const* cols, int64_t mm, int64_t begin, int64_t end, const int32_t* p) {
  uint8_t le[kChunk];
  for (int64_t s = begin; s < end; s += kChunk) {
    const int64_t len = std::min(kChunk, end - s);
    for (int64_t t = 0; t < len; ++t) le[t] = cols[0][s + t] <= p[1];
    for (int64_t j = 1; j < mm; ++j) {
      const int32_t* c = cols[j] + s;
      const int32_t v = p[j + 1];
      for (int64_t t = 0; t < len; ++t) le[t] &= c[t] <= v;
    }
    uint8_t hit = 0;
    for (int64_t t = 0; t < len; ++t) hit |= le[t];
    if (hit) return true;
  }
  return false;
}

bool front_dominates(const FrontColumns& f, const int32_t* p, std::vector<const int32_t*>& ptrs) {
  for (size_t j = 0; j < f.cols.size(); ++j) ptrs[j] = f.cols[j].data();
  return any_le(ptrs.data(), static_cast<int64_t>(f.cols.size()), 0, f.size(), p);
}

template <typename T>
void rank_nd(const T* x, int64_t n, int64_t m, int64_t* rank) {
  // Integer ranks per objective: exact order, half the bytes of double, 8 per vector.
  std::vector<int32_t> q(n * m);
  at::parallel_for(0, m, 1, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) dense_ranks(x, n, m, j, q.data());
  });
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  parallel_sort(order, [&](int64_t a, int64_t b) {
    const int32_t *pa = &q[a * m], *pb = &q[b * m];
    for (int64_t j = 0; j < m; ++j) {
      if (pa[j] != pb[j]) return pa[j] < pb[j];
    }
    return a < b;
  });
  // Unique rows in lexicographic order; copies take their first's rank.
  std::vector<int64_t> uniq;
  std::vector<int64_t> copy_of(n, -1);
  uniq.reserve(n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[k];
    if (!uniq.empty() && std::memcmp(&q[i * m], &q[uniq.back() * m], m * sizeof(int32_t)) == 0) {
      copy_of[i] = uniq.back();
    } else {
      uniq.push_back(i);
    }
  }
  const int64_t u = static_cast<int64_t>(uniq.size());
  std::vector<FrontColumns> fronts;
  std::vector<int64_t> start(kBlock);
  // The block itself, column-major, for the in-order pass.
  FrontColumns block(m);
  for (int64_t b0 = 0; b0 < u; b0 += kBlock) {
    const int64_t b1 = std::min(u, b0 + kBlock);
    const int64_t num_fronts = static_cast<int64_t>(fronts.size());
    // 1. Against the fronts of earlier blocks, independently per point.
    at::parallel_for(b0, b1, 8, [&](int64_t s, int64_t e) {
      std::vector<const int32_t*> ptrs(m - 1);
      for (int64_t k = s; k < e; ++k) {
        const int32_t* p = &q[uniq[k] * m];
        int64_t lo = 0, hi = num_fronts;
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (front_dominates(fronts[mid], p, ptrs)) {
            lo = mid + 1;
          } else {
            hi = mid;
          }
        }
        start[k - b0] = lo;
      }
    });
    // 2. In order: earlier points of the same block can only raise the rank.
    block = FrontColumns(m);
    std::vector<const int32_t*> ptrs(m - 1);
    for (int64_t k = b0; k < b1; ++k) {
      const int64_t i = uniq[k];
      const int32_t* p = &q[i * m];
      int64_t r = start[k - b0];
      for (size_t j = 0; j < block.cols.size(); ++j) ptrs[j] = block.cols[j].data();
      for (int64_t t = 0; t < k - b0; ++t) {
        // Only a dominator with rank >= r can matter; test those alone.
        if (rank[uniq[b0 + t]] >= r && any_le(ptrs.data(), m - 1, t, t + 1, p)) r = rank[uniq[b0 + t]] + 1;
      }
      rank[i] = r;
      block.add(p);
      if (r == static_cast<int64_t>(fronts.size())) fronts.emplace_back(m);
      fronts[r].add(p);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (copy_of[i] >= 0) rank[i] = rank[copy_of[i]];
  }
}

at::Tensor non_dominated_sort_cpu(const at::Tensor& objectives_in) {
  check_objectives(objectives_in, "non_dominated_sort", "objectives");
  const auto x = objectives_in.to(pareto_dtype(objectives_in.scalar_type())).contiguous();
  const int64_t n = x.size(0), m = x.size(1);
  auto ranks = at::zeros({n}, x.options().dtype(at::kLong));
  if (n == 0) return ranks;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "non_dominated_sort", [&] {
    const scalar_t* data = x.const_data_ptr<scalar_t>();
    check_finite_order(data, n * m);
    int64_t* r = ranks.mutable_data_ptr<int64_t>();
    if (m == 1) {
      rank_1d(data, n, r);
    } else if (m == 2) {
      rank_2d(data, n, r);
    } else if (m == 3) {
      rank_3d(data, n, r);
    } else {
      rank_nd(data, n, m, r);
    }
  });
  return ranks;
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) { m.impl("non_dominated_sort", &non_dominated_sort_cpu); }

}  // namespace nasx::ops
