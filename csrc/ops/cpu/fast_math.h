// exp(-|x|) and log1p(e) for e in [0, 1], float32, written so that the compiler
// vectorises the loops that call them (libm's expf/log1pf are scalar calls, and
// they made the focal loss kernel compute-bound). Both are within a few ulp of
// the correctly rounded result on their whole domain.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

#include "ops/focal_loss_math.h"  // select

namespace nasx::ops {

struct VecMath {
  // 2^n * exp(r), |r| <= ln2 / 2, degree-7 Taylor polynomial (truncation < 1e-8 relative).
  static inline __attribute__((always_inline)) float exp_neg_abs(float x) {
    // exp(-87) ~ 1.6e-38 stays a normal float; NaN passes through.
    const float a = std::fabs(x);
    const float y = -select(a > 87.0f, 87.0f, a);
    // n = round(y / ln2) with the 1.5 * 2^23 trick: its low mantissa bits hold n, and no
    // float-to-int conversion (a branch for the vectoriser, UB for NaN) is needed.
    constexpr float kShift = 12582912.0f;
    const float shifted = y * 1.44269504088896341f + kShift;
    const float nf = shifted - kShift;
    const float r = (y - nf * 0.693359375f) + nf * 2.12194440e-4f;  // ln2 split in two (Cody-Waite)
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t n = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kShift);
    return p * std::bit_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(n + 127) << 23));
  }

  // log1p(e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3]: odd series to s^17 (truncation < 1e-9 relative).
  static inline __attribute__((always_inline)) float log1p_unit(float e) {
    const float s = e / (2.0f + e);
    const float s2 = s * s;
    float q = 1.0f / 17.0f;
    q = q * s2 + 1.0f / 15.0f;
    q = q * s2 + 1.0f / 13.0f;
    q = q * s2 + 1.0f / 11.0f;
    q = q * s2 + 1.0f / 9.0f;
    q = q * s2 + 1.0f / 7.0f;
    q = q * s2 + 1.0f / 5.0f;
    q = q * s2 + 1.0f / 3.0f;
    q = q * s2 + 1.0f;
    return 2.0f * s * q;
  }

  template <typename T>
  static inline T exp_neg_abs(T x) {
    return std::exp(-std::fabs(x));
  }
  template <typename T>
  static inline T log1p_unit(T e) {
    return std::log1p(e);
  }
};

}  // namespace nasx::ops
