// numpy's pairwise summation (the order np.sum uses along a contiguous axis), so
// that crowding distances agree with pymoo to the last bit on CPU and CUDA.
#pragma once

#include <cstdint>

#include "ops/hd.h"

namespace nasx::ops {

// Sum of a[0], a[stride], ..., a[(n-1) * stride] in numpy's order (n >= 0).
NASX_HD_RECURSIVE double pairwise_sum(const double* a, int64_t n, int64_t stride) {
  if (n < 8) {
    double res = -0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i * stride];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j * stride];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[(i + j) * stride];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i * stride];
    return res;
  }
  // Recursion depth is log2(n / 128); M objectives never get near it on the device stack.
  int64_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(a, half, stride) + pairwise_sum(a + half * stride, n - half, stride);
}

}  // namespace nasx::ops
