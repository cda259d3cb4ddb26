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
//          O(N log N), after a radix sort on f0;
//   M = 3  the front's 2-D staircase of (f1, f2) in an ordered map: O(N log^2 N);
//   M >= 4 ENS-BS (Zhang et al. 2015): scan the front, on dense integer ranks of
//          each objective, 16 (N <= 65536) or 8 comparisons per AVX2 instruction; points are taken in
//          blocks whose searches against the earlier fronts are independent (and
//          can run in parallel, see kParallelWork), and
//          dominance inside a block is then resolved in order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <type_traits>
#include <numeric>
#include <vector>

#include "ops/cpu/simd.h"
#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

// Unsigned key with the same order as the value (-0.0 and 0.0 map to one key).
inline uint64_t order_key(double v) {
  v += 0.0;
  uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u >> 63) ? ~u : (u | (uint64_t{1} << 63));
}
inline uint64_t order_key(float v) { return order_key(static_cast<double>(v)); }

// Indices 0..n-1 ordered by column j of x (LSD radix sort on order_key, 11 bits
// at a time, skipping digits that are equal everywhere); equal values keep index order.
template <typename T>
std::vector<int64_t> radix_order(const T* x, int64_t n, int64_t m, int64_t j) {
  std::vector<std::pair<uint64_t, int64_t>> a(n), b(n);
  std::vector<std::array<int64_t, 2048>> hist(6);  // 11-bit digits: 6 passes
  for (auto& h : hist) h.fill(0);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t k = order_key(x[i * m + j]);
    a[i] = {k, i};
    for (int d = 0; d < 6; ++d) ++hist[d][(k >> (11 * d)) & 2047];
  }
  for (int d = 0; d < 6; ++d) {
    auto& h = hist[d];
    if (*std::max_element(h.begin(), h.end()) == n) continue;  // one bucket: nothing to reorder
    int64_t sum = 0;
    for (auto& c : h) {
      const int64_t t = c;
      c = sum;
      sum += t;
    }
    for (const auto& e : a) b[h[(e.first >> (11 * d)) & 2047]++] = e;
    a.swap(b);
  }
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = a[i].second;
  return order;
}

// Rows of x in lexicographic order: radix on column 0, then each run of equal
// column-0 values (rare unless values repeat) sorted by the remaining columns.
template <typename T>
std::vector<int64_t> lex_order(const T* x, int64_t n, int64_t m) {
  auto order = radix_order(x, n, m, 0);
  for (int64_t b = 0; b < n;) {
    int64_t e = b + 1;
    while (e < n && x[order[e] * m] == x[order[b] * m]) ++e;
    if (e - b > 1) {
      std::sort(order.begin() + b, order.begin() + e, [&](int64_t p, int64_t q) {
        return std::lexicographical_compare(x + p * m + 1, x + p * m + m, x + q * m + 1, x + q * m + m);
      });
    }
    b = e;
  }
  return order;
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
  const auto order = radix_order(x, n, 1, 0);
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
  const auto order = lex_order(x, n, 2);
  std::vector<Row2<T>> rows(n);
  for (int64_t k = 0; k < n; ++k) rows[k] = {x[2 * order[k]], x[2 * order[k] + 1], order[k]};
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
  const auto order = lex_order(x, n, 3);
  std::vector<Row3<T>> rows(n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[k];
    rows[k] = {x[3 * i], x[3 * i + 1], x[3 * i + 2], i};
  }
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
// Points whose front searches run in parallel. Small, because the in-order pass
// that resolves dominance inside a block costs block^2 scalar tests: 64 measured
// 3x faster than 1024 at N = 50k, M = 5 (2-core EPYC, quiet).
constexpr int64_t kBlock = 64;
// A parallel region must carry this many member tests (block x points ranked so
// far) to pay for it: on a quiet 2-core machine it saves ~30% at N = 50k, M = 5.
// (On a heavily oversubscribed machine OpenMP's spinning workers can make any
// parallel region slower; set OMP_WAIT_POLICY=PASSIVE there.)
constexpr int64_t kParallelWork = 1 << 20;
constexpr int64_t kChunk = 256;  // front members tested per vector pass before an early exit

// Dense integer rank of every value of column j (equal values, equal ranks).
template <typename T>
void dense_ranks(const T* x, int64_t n, int64_t m, int64_t j, int32_t* out) {
  const auto order = radix_order(x, n, m, j);
  int32_t r = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (k > 0 && x[order[k] * m + j] != x[order[k - 1] * m + j]) ++r;
    out[order[k] * m + j] = r;
  }
}

// Members of one front, column-major over objectives 1..M-1 (objective 0 needs no
// test: every earlier point has f0 <= p's). K: uint16 ranks when N allows, else int32.
template <typename K>
struct FrontColumns {
  std::vector<std::vector<K>> cols;
  explicit FrontColumns(int64_t m) : cols(m - 1) {}
  int64_t size() const { return static_cast<int64_t>(cols[0].size()); }
  void add(const K* p) {
    for (size_t j = 0; j < cols.size(); ++j) cols[j].push_back(p[j]);
  }
};

// Whether any of members [0, size) is <= p in all mm columns. The column count is
// a compile-time constant for M <= 8, so the member loop vectorises (16 uint16 or
// 8 int32 comparisons per AVX2 instruction).
template <int MM, typename K>
NASX_ALWAYS_INLINE bool any_le_fixed(const K* const* cols, int64_t size, const K* p) {
  const K* c[MM];
  K v[MM];
  for (int j = 0; j < MM; ++j) c[j] = cols[j], v[j] = p[j];
  for (int64_t s = 0; s < size; s += kChunk) {
    const int64_t e = std::min(size, s + kChunk);
    int hit = 0;
    for (int64_t t = s; t < e; ++t) {
      int ok = 1;
      for (int j = 0; j < MM; ++j) ok &= c[j][t] <= v[j];
      hit |= ok;
    }
    if (hit) return true;
  }
  return false;
}

template <typename K>
bool any_le_generic(const K* const* cols, int64_t mm, int64_t size, const K* p) {
  for (int64_t t = 0; t < size; ++t) {
    int64_t j = 0;
    while (j < mm && cols[j][t] <= p[j]) ++j;
    if (j == mm) return true;
  }
  return false;
}

#define NASX_ANY_LE(MM, K) \
  NASX_SIMD_CLONES bool any_le_##MM##_##K(const K* const* c, int64_t n, const K* p) { return any_le_fixed<MM, K>(c, n, p); }
NASX_ANY_LE(3, uint16_t)
NASX_ANY_LE(4, uint16_t)
NASX_ANY_LE(5, uint16_t)
NASX_ANY_LE(6, uint16_t)
NASX_ANY_LE(7, uint16_t)
NASX_ANY_LE(3, int32_t)
NASX_ANY_LE(4, int32_t)
NASX_ANY_LE(5, int32_t)
NASX_ANY_LE(6, int32_t)
NASX_ANY_LE(7, int32_t)
#undef NASX_ANY_LE

template <typename K>
using AnyLe = bool (*)(const K* const*, int64_t, const K*);

template <typename K>
AnyLe<K> pick_any_le(int64_t mm) {
  if constexpr (std::is_same_v<K, uint16_t>) {
    switch (mm) {
      case 3: return any_le_3_uint16_t;
      case 4: return any_le_4_uint16_t;
      case 5: return any_le_5_uint16_t;
      case 6: return any_le_6_uint16_t;
      case 7: return any_le_7_uint16_t;
    }
  } else {
    switch (mm) {
      case 3: return any_le_3_int32_t;
      case 4: return any_le_4_int32_t;
      case 5: return any_le_5_int32_t;
      case 6: return any_le_6_int32_t;
      case 7: return any_le_7_int32_t;
    }
  }
  return nullptr;
}

template <typename T, typename K>
void rank_nd(const T* x, int64_t n, int64_t m, int64_t* rank) {
  const int64_t mm = m - 1;
  // Integer ranks per objective: exact order, fewer bytes, more lanes per vector.
  std::vector<int32_t> q32(n * m);
  for (int64_t j = 0; j < m; ++j) dense_ranks(x, n, m, j, q32.data());
  // Objectives 1..M-1 of every point, as K.
  std::vector<K> q(n * mm);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < mm; ++j) q[i * mm + j] = static_cast<K>(q32[i * m + j + 1]);
  }
  const auto order = lex_order(x, n, m);
  // Unique rows in lexicographic order; copies take their first's rank.
  std::vector<int64_t> uniq;
  std::vector<int64_t> copy_of(n, -1);
  uniq.reserve(n);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[k];
    if (!uniq.empty() && std::memcmp(&q32[i * m], &q32[uniq.back() * m], m * sizeof(int32_t)) == 0) {
      copy_of[i] = uniq.back();
    } else {
      uniq.push_back(i);
    }
  }
  const AnyLe<K> fixed = pick_any_le<K>(mm);
  auto front_has_dominator = [&](const FrontColumns<K>& f, const K* p, std::vector<const K*>& ptrs) {
    for (int64_t j = 0; j < mm; ++j) ptrs[j] = f.cols[j].data();
    return fixed ? fixed(ptrs.data(), f.size(), p) : any_le_generic(ptrs.data(), mm, f.size(), p);
  };
  const int64_t u = static_cast<int64_t>(uniq.size());
  std::vector<FrontColumns<K>> fronts;
  std::vector<int64_t> start(kBlock);
  for (int64_t b0 = 0; b0 < u; b0 += kBlock) {
    const int64_t b1 = std::min(u, b0 + kBlock);
    const int64_t num_fronts = static_cast<int64_t>(fronts.size());
    // 1. Against the fronts of earlier blocks, independently per point.
    auto search = [&](int64_t s, int64_t e) {
      std::vector<const K*> ptrs(mm);
      for (int64_t k = s; k < e; ++k) {
        const K* p = &q[uniq[k] * mm];
        int64_t lo = 0, hi = num_fronts;
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (front_has_dominator(fronts[mid], p, ptrs)) {
            lo = mid + 1;
          } else {
            hi = mid;
          }
        }
        start[k - b0] = lo;
      }
    };
    if (kParallelWork > 0 && (b1 - b0) * b0 >= kParallelWork) {
      at::parallel_for(b0, b1, 16, search);
    } else {
      search(b0, b1);
    }
    // 2. In order: earlier points of the same block can only raise the rank.
    for (int64_t k = b0; k < b1; ++k) {
      const K* p = &q[uniq[k] * mm];
      int64_t r = start[k - b0];
      for (int64_t t = b0; t < k; ++t) {
        if (rank[uniq[t]] < r) continue;  // cannot raise the rank
        const K* o = &q[uniq[t] * mm];
        int64_t j = 0;
        while (j < mm && o[j] <= p[j]) ++j;
        if (j == mm) r = rank[uniq[t]] + 1;
      }
      rank[uniq[k]] = r;
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
  const auto x = objectives_in.to(compute_dtype(objectives_in.scalar_type())).contiguous();
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
      if (n <= 65536) {
        rank_nd<scalar_t, uint16_t>(data, n, m, r);
      } else {
        rank_nd<scalar_t, int32_t>(data, n, m, r);
      }
    }
  });
  return ranks;
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) { m.impl("non_dominated_sort", &non_dominated_sort_cpu); }

}  // namespace nasx::ops
