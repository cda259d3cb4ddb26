// Element-wise sigmoid focal loss and its derivatives, shared by the CPU and CUDA
// kernels. The forward is torchvision.ops.sigmoid_focal_loss operation for
// operation, in its order and with torch's own formulas for each step:
//
//   p    = 1 / (1 + exp(-x))                        torch.sigmoid
//   ls   = min(x, 0) - log1p(exp(-|x|))             torch's log_sigmoid
//   ce   = (1 - t) * x - ls                         F.binary_cross_entropy_with_logits
//   p_t  = p * t + (1 - p) * (1 - t)
//   loss = ce * (1 - p_t) ** gamma                  torch.pow's exponent cases (focal_pow)
//   loss = (alpha * t + (1 - alpha) * (1 - t)) * loss      when alpha >= 0
//
// with alpha and (1 - alpha) rounded from double, as Python hands them to torch.
// p and ls come from the caller: the CPU forward takes them from torch.sigmoid and
// torch.log_sigmoid themselves (and a general exponent from torch.pow), the CUDA
// kernels compute them as torch's CUDA kernels do (focal_sigmoid,
// focal_log_sigmoid). The rest is exact IEEE arithmetic in torchvision's order, so
// given torch's p and ls the loss is torchvision's bit for bit. Products are mul_rn
// (never contracted into an FMA: torch runs each operation as its own kernel).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/box_math.h"  // mul_rn
#include "ops/hd.h"

// Always inlined on the host: the CPU kernel's loops only vectorise with the whole
// element computation in their body.
#if defined(__CUDACC__)
#define NASX_FOCAL NASX_HD
#else
#define NASX_FOCAL inline __attribute__((always_inline))
#endif

#if defined(__CUDACC__)
#define NASX_MATH(f) ::f
#else
#define NASX_MATH(f) std::f
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

// torch.pow(q, gamma) for a scalar gamma >= 0 picks a kernel by the exponent's value.
enum class FocalPow : int { One, Copy, Sqrt, Square, Cube, General };

inline FocalPow focal_pow_kind(double gamma) {
  if (gamma == 0.0) return FocalPow::One;  // fill_(1)
  if (gamma == 1.0) return FocalPow::Copy;
  if (gamma == 0.5) return FocalPow::Sqrt;
  if (gamma == 2.0) return FocalPow::Square;
  if (gamma == 3.0) return FocalPow::Cube;
  return FocalPow::General;
}

template <typename T>
struct FocalParams {
  T alpha, one_minus_alpha, gamma;
  double gamma_d;  // the exponent as given (torch's CPU scalar path raises in double)
  FocalPow pow;
  bool use_alpha;  // alpha >= 0, as torchvision
  FocalParams(double a, double g)
      : alpha(static_cast<T>(a)), one_minus_alpha(static_cast<T>(1.0 - a)), gamma(static_cast<T>(g)), gamma_d(g),
        pow(focal_pow_kind(g)), use_alpha(a >= 0) {}
};

// sigmoid and log_sigmoid as torch's CUDA kernels write them, with the library
// functions (expf, log1pf on the device).
template <typename T>
NASX_FOCAL T focal_sigmoid(T x) {
  return T(1) / (T(1) + NASX_MATH(exp)(-x));
}

template <typename T>
NASX_FOCAL T focal_log_sigmoid(T x) {
  return select(x < T(0), x, T(0)) - NASX_MATH(log1p)(NASX_MATH(exp)(-NASX_MATH(fabs)(x)));
}

// (1 - p_t) ** gamma for every case but General, which the caller computes.
template <typename T>
NASX_FOCAL T focal_pow(T q, FocalPow kind) {
  switch (kind) {
    case FocalPow::One:
      return T(1);
    case FocalPow::Copy:
      return q;
    case FocalPow::Sqrt:
      return NASX_MATH(sqrt)(q);
    case FocalPow::Square:
      return mul_rn(q, q);
    case FocalPow::Cube:
      return mul_rn(mul_rn(q, q), q);
    default:
      return q;  // General: replaced by the caller
  }
}

// d/dq of q ** gamma (for the backward; 0 for gamma == 0, as torch.pow's).
template <typename T>
NASX_FOCAL T focal_pow_grad(T q, T gamma, FocalPow kind) {
  switch (kind) {
    case FocalPow::One:
      return T(0);
    case FocalPow::Copy:
      return T(1);
    case FocalPow::Square:
      return T(2) * q;
    default:
      return gamma * NASX_MATH(pow)(q, gamma - T(1));
  }
}

template <typename T>
struct FocalCore {
  T p, ce, q, a;  // sigmoid, cross-entropy, 1 - p_t, alpha_t
};

// p = sigmoid(x), ls = log_sigmoid(x).
template <typename T>
NASX_FOCAL FocalCore<T> focal_core(T x, T t, T p, T ls, const FocalParams<T>& prm) {
  FocalCore<T> c;
  c.p = p;
  const T one_t = T(1) - t;
  c.ce = mul_rn(one_t, x) - ls;
  c.q = T(1) - (mul_rn(c.p, t) + mul_rn(T(1) - c.p, one_t));
  c.a = mul_rn(prm.alpha, t) + mul_rn(prm.one_minus_alpha, one_t);
  return c;
}

// The loss of one element given m = (1 - p_t) ** gamma.
template <typename T>
NASX_FOCAL T focal_finish(const FocalCore<T>& c, T m, const FocalParams<T>& prm) {
  const T loss = mul_rn(c.ce, m);
  return select(prm.use_alpha, mul_rn(c.a, loss), loss);
}

// dL/dx and (when WithTargets) dL/dt of one element, scaled by g, for m =
// (1 - p_t) ** gamma. The chain rule is applied in autograd's order through
// loss = a_t * ce * m, q = 1 - p_t, so that where d(m)/dq is infinite (gamma < 1
// at q = 0) the result is autograd's NaN rather than an arbitrary infinity.
template <typename T, bool WithTargets>
NASX_FOCAL void focal_grad(T x, T t, const FocalCore<T>& c, T m, const FocalParams<T>& prm, T g, T* dx, T* dt) {
  const T a = select(prm.use_alpha, c.a, T(1));
  const T d_ce = g * a * m;                                                // dL/dce
  const T d_pt = -(g * a * c.ce * focal_pow_grad(c.q, prm.gamma, prm.pow));  // dL/dp_t = -dL/dq
  const T d_p = d_pt * t - d_pt * (T(1) - t);                            // through p_t = p t + (1 - p)(1 - t)
  *dx = d_ce * (c.p - t) + d_p * (c.p * (T(1) - c.p));
  if constexpr (WithTargets) {
    const T d_a_value = g * c.ce * m;
    const T d_a = select(prm.use_alpha, d_a_value, T(0));  // dL/da_t
    *dt = d_ce * -x + (d_pt * c.p - d_pt * (T(1) - c.p)) + (d_a * prm.alpha - d_a * prm.one_minus_alpha);
  }
}

}  // namespace nasx::ops

#undef NASX_MATH
#undef NASX_FOCAL
