// Element-wise sigmoid focal loss and its derivatives, shared by the CPU and CUDA kernels.
//
//   p = sigmoid(x), ce = BCE-with-logits(x, t), p_t = p t + (1 - p)(1 - t),
//   loss = a_t * ce * (1 - p_t)^gamma,  a_t = alpha t + (1 - alpha)(1 - t) (1 when alpha < 0)
//
// exactly torchvision.ops.sigmoid_focal_loss's formula. ce is evaluated in the
// stable form (1 - t) x - log_sigmoid(x) with one exp and one log1p per element,
// which both the forward and the fused backward reuse.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/hd.h"

// Always inlined on the host: the CPU kernel's loops only vectorise with the whole
// element computation in their body, and GCC stops inlining at this size otherwise.
#if defined(__CUDACC__)
#define NASX_FOCAL NASX_HD
#else
#define NASX_FOCAL inline __attribute__((always_inline))
#endif

namespace nasx::ops {

// c ? a : b. On the host as a bit mask, which GCC vectorises where it would keep a
// branch for the ternary (it does not if-convert floating-point compares that may trap).
template <typename T>
NASX_HD T select(bool c, T a, T b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const U m = U(0) - static_cast<U>(c);
  return std::bit_cast<T>(static_cast<U>((m & std::bit_cast<U>(a)) | (~m & std::bit_cast<U>(b))));
#endif
}

template <typename T>
struct FocalParams {
  T alpha, gamma;
  bool use_alpha;  // alpha >= 0, as torchvision
  FocalParams(double a, double g) : alpha(static_cast<T>(a)), gamma(static_cast<T>(g)), use_alpha(a >= 0) {}
};

#if defined(__CUDACC__)
#define NASX_MATH(f) ::f
#else
#define NASX_MATH(f) std::f
#endif

// (1 - p_t)^gamma; small integer exponents multiply, as torch.pow does.
template <typename T>
NASX_FOCAL T focal_pow(T q, T gamma) {
  if (gamma == T(2)) return q * q;
  if (gamma == T(1)) return q;
  if (gamma == T(0)) return T(1);
  return NASX_MATH(pow)(q, gamma);
}

// d/dq of focal_pow; 0 for gamma == 0, as torch.pow's backward.
template <typename T>
NASX_FOCAL T focal_pow_grad(T q, T gamma) {
  if (gamma == T(2)) return T(2) * q;
  if (gamma == T(1)) return T(1);
  if (gamma == T(0)) return T(0);
  return gamma * NASX_MATH(pow)(q, gamma - T(1));
}

template <typename T>
struct FocalCore {
  T p, ce, q, a;  // sigmoid, cross-entropy, 1 - p_t, alpha_t
};

// exp(-|x|) and log1p of it: the library functions by default; the CPU kernel
// passes vectorisable ones for float32 (cpu/fast_math.h).
struct LibmMath {
  template <typename T>
  static NASX_FOCAL T exp_neg_abs(T x) {
    return NASX_MATH(exp)(-NASX_MATH(fabs)(x));
  }
  template <typename T>
  static NASX_FOCAL T log1p_unit(T e) {
    return NASX_MATH(log1p)(e);
  }
};

template <typename T, typename M = LibmMath>
NASX_FOCAL FocalCore<T> focal_core(T x, T t, const FocalParams<T>& prm) {
  const T e = M::exp_neg_abs(x);
  const T l1p = M::log1p_unit(e);
  FocalCore<T> c;
  // Selects between computed values only (no branch around a division), so CPU loops vectorise.
  c.p = select(x >= T(0), T(1), e) / (T(1) + e);
  c.ce = (T(1) - t) * x - (select(x < T(0), x, T(0)) - l1p);
  c.q = T(1) - (c.p * t + (T(1) - c.p) * (T(1) - t));
  const T a = prm.alpha * t + (T(1) - prm.alpha) * (T(1) - t);
  c.a = select(prm.use_alpha, a, T(1));
  return c;
}

template <typename T, typename M = LibmMath>
NASX_FOCAL T focal_loss(T x, T t, const FocalParams<T>& prm) {
  const auto c = focal_core<T, M>(x, t, prm);
  return c.a * (c.ce * focal_pow(c.q, prm.gamma));
}

// dL/dx and (when WithTargets) dL/dt of one element, scaled by g. The chain rule
// is applied in autograd's order through loss = a_t * ce * m, m = q^gamma,
// q = 1 - p_t, so that where d(m)/dq is infinite (gamma < 1 at q = 0) the result
// is autograd's NaN rather than an arbitrary infinity.
template <typename T, bool WithTargets, typename M = LibmMath>
NASX_FOCAL void focal_grad(T x, T t, const FocalParams<T>& prm, T g, T* dx, T* dt) {
  const auto c = focal_core<T, M>(x, t, prm);
  const T m = focal_pow(c.q, prm.gamma);
  const T d_ce = g * c.a * m;                                // dL/dce
  const T d_pt = -(g * c.a * c.ce * focal_pow_grad(c.q, prm.gamma));  // dL/dp_t = -dL/dq
  const T d_p = d_pt * t - d_pt * (T(1) - t);                // through p_t = p t + (1 - p)(1 - t)
  *dx = d_ce * (c.p - t) + d_p * (c.p * (T(1) - c.p));
  if constexpr (WithTargets) {
    const T d_a_value = g * c.ce * m;
    const T d_a = select(prm.use_alpha, d_a_value, T(0));    // dL/da_t
    *dt = d_ce * -x + (d_pt * c.p - d_pt * (T(1) - c.p)) + (d_a * prm.alpha - d_a * (T(1) - prm.alpha));
  }
}

#undef NASX_MATH
#undef NASX_FOCAL

}  // namespace nasx::ops
