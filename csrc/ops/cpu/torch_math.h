// exp, log1p and pow over arrays, computed the way torch's own CPU kernels
// compute them, so that a fused kernel reproduces a chain of torch operations bit
// for bit (the focal loss against torchvision's, in particular).
//
// torch picks one CPU capability at run time (at::get_cpu_capability(): AVX512,
// AVX2 or DEFAULT on x86-64) and its Vectorized<T> then evaluates exp, log1p and
// pow with SLEEF's 1-ulp functions (AVX2, AVX512: Sleef_expf8_u10, ..., exported
// by libtorch_cpu) or with libm (DEFAULT). TorchMath looks the same capability and
// functions up once (dlsym: a torch without them falls back to libm) and applies
// them in vector-sized blocks.
//
// torch.sqrt (and torch.pow(x, 0.5)) goes through MKL's VML where torch has MKL
// (vmsSqrt / vmdSqrt, high-accuracy mode): not always correctly rounded, so
// TorchMath::sqrt calls the same function.
//
// Element-wise ops built on cpu_kernel_vec (torch.sigmoid, torch.pow) compute the
// last n % (2 * lanes) elements of each thread's range with the scalar function
// instead (libm), and those ranges follow from torch's parallel split;
// scalar_tails() lists them, and the caller recomputes those elements with libm.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>  // at::internal::GRAIN_SIZE

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace nasx::ops {

struct TorchMath {
  enum class Isa { Libm, Avx2, Avx512 };

  // Resolved once: torch's capability and, for it, the SLEEF functions.
  static const TorchMath& get();

  Isa isa = Isa::Libm;
  int lanes_float = 8, lanes_double = 4;  // Vectorized<T>::size() of torch's kernels
  // One vector of SLEEF; nullptr under Libm.
  void* exp_f = nullptr;
  void* log1p_f = nullptr;
  void* pow_f = nullptr;
  void* exp_d = nullptr;
  void* log1p_d = nullptr;
  void* pow_d = nullptr;
  void* sqrt_f = nullptr;  // MKL VML, when torch has MKL
  void* sqrt_d = nullptr;

  // out[i] = exp(in[i]) (in and out may alias), and likewise.
  void exp(const float* in, float* out, int64_t n) const;
  void exp(const double* in, double* out, int64_t n) const;
  void log1p(const float* in, float* out, int64_t n) const;
  void log1p(const double* in, double* out, int64_t n) const;
  // out[i] = pow(in[i], e): Vectorized<T>::pow with the exponent rounded to T.
  void pow(const float* in, float e, float* out, int64_t n) const;
  void pow(const double* in, double e, double* out, int64_t n) const;

  void sqrt(const float* in, float* out, int64_t n) const;
  void sqrt(const double* in, double* out, int64_t n) const;

  template <typename T>
  int lanes() const {
    return sizeof(T) == 4 ? lanes_float : lanes_double;
  }

  // [begin, end) index ranges that torch computes with the scalar function when a
  // cpu_kernel_vec op runs over n contiguous elements of T: the tail of each range
  // of TensorIterator's parallel split (grain at::internal::GRAIN_SIZE).
  template <typename T>
  std::vector<std::pair<int64_t, int64_t>> scalar_tails(int64_t n) const {
    std::vector<std::pair<int64_t, int64_t>> tails;
    if (n <= 0) return tails;
    const int64_t grain = at::internal::GRAIN_SIZE, step = 2 * lanes<T>();
    int64_t threads = at::get_num_threads();
    if (n <= grain || threads <= 1 || at::in_parallel_region()) {
      threads = 1;
    } else {
      threads = std::min<int64_t>(threads, (n + grain - 1) / grain);
    }
    const int64_t chunk = (n + threads - 1) / threads;
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t len = std::min(chunk, n - begin);
      if (len % step) tails.emplace_back(begin + len - len % step, begin + len);
    }
    return tails;
  }
};

}  // namespace nasx::ops
