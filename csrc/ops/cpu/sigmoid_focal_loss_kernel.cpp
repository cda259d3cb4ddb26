// CPU kernels of sigmoid_focal_loss and its backward.
//
// torchvision evaluates the focal loss as ~12 separate tensor ops forward and
// twice as many in autograd's backward, each a full pass over memory.
//
// Forward: bit for bit torchvision's result. Its transcendental steps are taken
// from torch itself: torch.sigmoid and torch.log_sigmoid (what
// binary_cross_entropy_with_logits calls) on the same contiguous tensor, and
// torch.pow for an exponent that is not 0, 1, 2 or 3; which exp / log1p / pow /
// sqrt those use (SLEEF, MKL or libm, per element) depends on torch's build, its
// CPU capability, the tensor's size and the thread count, so only torch can
// reproduce them. Everything between is exact IEEE arithmetic, fused into one
// pass in torchvision's order (focal_loss_math.h). Reductions add per-chunk
// double sums in a fixed order (independent of the thread count).
//
// Backward: one pass yielding the input (and optionally target) gradient from
// vectorisable exp / log1p (cpu/fast_math.h, a few ulp from libm's).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/cpu/fast_math.h"
#include "ops/cpu/simd.h"
#include "ops/focal_loss_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kGrain = 16384;

// q = 1 - p_t of each element (only for an exponent torch.pow computes itself).
template <typename T>
NASX_ALWAYS_INLINE void q_body(const T* __restrict x, const T* __restrict t, const T* __restrict p,
                               const T* __restrict ls, int64_t n, const FocalParams<T>& prm, T* __restrict q) {
  for (int64_t i = 0; i < n; ++i) q[i] = focal_core(x[i], t[i], p[i], ls[i], prm).q;
}

// The loops below are instantiated per exponent kind K: with k.pow a compile-time
// constant (the usual 2, and 0 and 1) focal_pow and focal_pow_grad fold away and
// the loops vectorise; General covers the rest with the kind read at run time.
template <typename T, FocalPow K>
NASX_ALWAYS_INLINE FocalParams<T> folded(const FocalParams<T>& prm) {
  FocalParams<T> k = prm;
  if constexpr (K != FocalPow::General) k.pow = K;
  return k;
}

#define NASX_BY_POW_KIND(prm, CALL)             \
  switch ((prm).pow) {                          \
    case FocalPow::Square:                      \
      CALL(FocalPow::Square);                   \
      break;                                    \
    case FocalPow::One:                         \
      CALL(FocalPow::One);                      \
      break;                                    \
    case FocalPow::Copy:                        \
      CALL(FocalPow::Copy);                     \
      break;                                    \
    default:                                    \
      CALL(FocalPow::General);                  \
  }

// loss of each element with (1 - p_t) ** gamma computed here.
template <typename T, FocalPow K>
NASX_ALWAYS_INLINE void loss_loop(const T* __restrict x, const T* __restrict t, const T* __restrict p,
                                  const T* __restrict ls, int64_t n, const FocalParams<T>& prm, T* __restrict out) {
  const FocalParams<T> k = folded<T, K>(prm);
  for (int64_t i = 0; i < n; ++i) {
    const auto c = focal_core(x[i], t[i], p[i], ls[i], k);
    out[i] = focal_finish(c, focal_pow(c.q, k.pow), k);
  }
}

// loss of each element; m = (1 - p_t) ** gamma from torch.pow, or nullptr for the
// exponents computed here (0, 1, 2, 3).
template <typename T>
NASX_ALWAYS_INLINE void loss_body(const T* __restrict x, const T* __restrict t, const T* __restrict p,
                                  const T* __restrict ls, const T* __restrict m, int64_t n, const FocalParams<T>& prm,
                                  T* __restrict out) {
  if (m) {
    for (int64_t i = 0; i < n; ++i) out[i] = focal_finish(focal_core(x[i], t[i], p[i], ls[i], prm), m[i], prm);
    return;
  }
#define NASX_LOSS_LOOP(K) loss_loop<T, K>(x, t, p, ls, n, prm, out)
  NASX_BY_POW_KIND(prm, NASX_LOSS_LOOP)
#undef NASX_LOSS_LOOP
}

// Compiled for AVX2 and baseline (exact IEEE operations either way: no FMA contraction).
#define NASX_FOCAL_CHUNKS(T)                                                                                    \
  NASX_SIMD_CLONES void q_chunk(const T* x, const T* t, const T* p, const T* ls, int64_t n,                     \
                                const FocalParams<T>& prm, T* q) {                                              \
    q_body(x, t, p, ls, n, prm, q);                                                                             \
  }                                                                                                             \
  NASX_SIMD_CLONES void loss_chunk(const T* x, const T* t, const T* p, const T* ls, const T* m, int64_t n,      \
                                   const FocalParams<T>& prm, T* out) {                                         \
    loss_body(x, t, p, ls, m, n, prm, out);                                                                     \
  }
NASX_FOCAL_CHUNKS(float)
NASX_FOCAL_CHUNKS(double)
#undef NASX_FOCAL_CHUNKS

// p = sigmoid(x) and ls = log_sigmoid(x) with the vectorisable exp / log1p.
template <typename T>
NASX_ALWAYS_INLINE void sigmoids(T x, T* p, T* ls) {
  const T e = VecMath::exp_neg_abs(x);
  *p = select(x >= T(0), T(1), e) / (T(1) + e);
  *ls = select(x < T(0), x, T(0)) - VecMath::log1p_unit(e);
}

// grad: per element (g != nullptr) or the same `scale` everywhere.
template <typename T, bool WithTargets>
NASX_ALWAYS_INLINE void grad_element(T x, T t, T g, const FocalParams<T>& prm, T* dx, T* dt) {
  T p, ls;
  sigmoids(x, &p, &ls);
  const auto c = focal_core(x, t, p, ls, prm);
  const T m = prm.pow == FocalPow::General ? std::pow(c.q, prm.gamma) : focal_pow(c.q, prm.pow);
  focal_grad<T, WithTargets>(x, t, c, m, prm, g, dx, dt);
}

template <typename T, bool WithTargets, FocalPow K>
NASX_ALWAYS_INLINE void grad_loop(const T* __restrict x, const T* __restrict t, const T* __restrict g, T scale,
                                  int64_t n, const FocalParams<T>& prm, T* __restrict dx, T* __restrict dt) {
  const FocalParams<T> k = folded<T, K>(prm);
  if (g) {
    for (int64_t i = 0; i < n; ++i) grad_element<T, WithTargets>(x[i], t[i], g[i], k, dx + i, WithTargets ? dt + i : nullptr);
  } else {
    for (int64_t i = 0; i < n; ++i) grad_element<T, WithTargets>(x[i], t[i], scale, k, dx + i, WithTargets ? dt + i : nullptr);
  }
}

template <typename T, bool WithTargets>
NASX_ALWAYS_INLINE void grad_body(const T* __restrict x, const T* __restrict t, const T* __restrict g, T scale,
                                  int64_t n, const FocalParams<T>& prm, T* __restrict dx, T* __restrict dt) {
#define NASX_GRAD_LOOP(K) grad_loop<T, WithTargets, K>(x, t, g, scale, n, prm, dx, dt)
  NASX_BY_POW_KIND(prm, NASX_GRAD_LOOP)
#undef NASX_GRAD_LOOP
}

#define NASX_GRAD_CHUNK(T)                                                                                     \
  NASX_SIMD_CLONES void grad_chunk(const T* x, const T* t, const T* g, T scale, int64_t n,                     \
                                   const FocalParams<T>& prm, T* dx, T* dt) {                                  \
    if (dt) {                                                                                                  \
      grad_body<T, true>(x, t, g, scale, n, prm, dx, dt);                                                      \
    } else {                                                                                                   \
      grad_body<T, false>(x, t, g, scale, n, prm, dx, nullptr);                                                \
    }                                                                                                          \
  }
NASX_GRAD_CHUNK(float)
NASX_GRAD_CHUNK(double)
#undef NASX_GRAD_CHUNK
#undef NASX_BY_POW_KIND

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& inputs, const at::Tensor& targets, double alpha, double gamma,
                                  c10::string_view reduction) {
  const auto f = prepare_focal(inputs, targets, alpha, gamma, reduction);
  const int64_t n = f.n;
  // torchvision's p = torch.sigmoid(inputs) and BCE's log_sigmoid(inputs), by torch.
  const at::Tensor p = at::sigmoid(f.x);
  const at::Tensor ls = at::log_sigmoid(f.x);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(f.dtype, "sigmoid_focal_loss", [&] {
    using T = scalar_t;
    const FocalParams<T> prm(alpha, gamma);
    const T* px = f.x.const_data_ptr<T>();
    const T* pt = f.t.const_data_ptr<T>();
    const T* pp = p.const_data_ptr<T>();
    const T* pls = ls.const_data_ptr<T>();
    // (1 - p_t) ** gamma by torch.pow where torch does not multiply (sqrt, general).
    at::Tensor m;
    if (prm.pow == FocalPow::General || prm.pow == FocalPow::Sqrt) {
      auto q = at::empty(f.x.sizes(), f.x.options());
      T* pq = q.mutable_data_ptr<T>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { q_chunk(px + b, pt + b, pp + b, pls + b, e - b, prm, pq + b); });
      m = at::pow(q, gamma);
    }
    const T* pm = m.defined() ? m.const_data_ptr<T>() : nullptr;
    const auto chunk = [&](int64_t b, int64_t e, T* o) {
      loss_chunk(px + b, pt + b, pp + b, pls + b, pm ? pm + b : nullptr, e - b, prm, o);
    };
    if (f.reduction == Reduction::None) {
      out = at::empty(f.x.sizes(), f.x.options());
      T* po = out.mutable_data_ptr<T>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { chunk(b, e, po + b); });
      return;
    }
    const int64_t chunks = (n + kGrain - 1) / kGrain;
    std::vector<double> partial(chunks, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
      std::vector<T> buf(kGrain);
      for (int64_t c = cb; c < ce; ++c) {
        const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
        chunk(begin, end, buf.data());
        double acc = 0;
        for (int64_t i = 0; i < end - begin; ++i) acc += buf[i];
        partial[c] = acc;
      }
    });
    double total = 0;
    for (double v : partial) total += v;
    if (f.reduction == Reduction::Mean) total /= static_cast<double>(n);  // 0/0 = nan for empty input, as torch
    out = at::scalar_tensor(total, f.x.options());
  });
  return out.scalar_type() == f.out_dtype ? out : out.to(f.out_dtype);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& inputs,
                                                                   const at::Tensor& targets, double alpha,
                                                                   double gamma, c10::string_view reduction,
                                                                   bool targets_grad) {
  const auto f = prepare_focal_backward(grad, inputs, targets, alpha, gamma, reduction);
  const int64_t n = f.n;
  auto dx = at::empty(f.x.sizes(), f.x.options());
  auto dt = targets_grad ? at::empty(f.x.sizes(), f.x.options()) : at::empty({0}, f.x.options());
  AT_DISPATCH_FLOATING_TYPES(f.dtype, "sigmoid_focal_loss", [&] {
    using T = scalar_t;
    const FocalParams<T> prm(alpha, gamma);
    const T* px = f.x.const_data_ptr<T>();
    const T* pt = f.t.const_data_ptr<T>();
    const T* pg = f.grad.const_data_ptr<T>();
    T* pdx = dx.mutable_data_ptr<T>();
    T* pdt = targets_grad ? dt.mutable_data_ptr<T>() : nullptr;
    const bool per_element = f.reduction == Reduction::None;
    T scale = per_element ? T(1) : pg[0];
    if (f.reduction == Reduction::Mean) scale = scale / static_cast<T>(n);  // torch's mean backward divides
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      grad_chunk(px + b, pt + b, per_element ? pg + b : nullptr, scale, e - b, prm, pdx + b, pdt ? pdt + b : nullptr);
    });
  });
  return {dx.to(inputs.scalar_type()), targets_grad ? dt.to(targets.scalar_type()) : at::empty({0}, targets.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cpu);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cpu);
}

}  // namespace nasx::ops
