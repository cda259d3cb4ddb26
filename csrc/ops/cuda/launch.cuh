// Launch shape of nasx's grid-stride CUDA kernels: kThreads per block, at most
// 65535 * 32 blocks (each thread then loops), 64-bit element indices.
#pragma once

#include <algorithm>
#include <cstdint>

namespace nasx::ops {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(b, 65535LL * 32));
}

}  // namespace nasx::ops

// for (int64_t i = this thread's first index; i < n; i += all threads of the grid)
#define NASX_GRID_STRIDE(i, n)                                                               \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
