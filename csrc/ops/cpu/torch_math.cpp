// TorchMath (torch_math.h): torch's CPU exp / log1p / pow, looked up at run time.
#include "ops/cpu/torch_math.h"

#include <ATen/Context.h>  // at::hasMKL
#include <ATen/Version.h>  // at::get_cpu_capability

#include <cmath>
#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#include <dlfcn.h>
#include <immintrin.h>
#define NASX_TORCH_SLEEF 1
#else
#define NASX_TORCH_SLEEF 0
#endif

namespace nasx::ops {
namespace {

#if NASX_TORCH_SLEEF
// One SLEEF call per vector of W lanes; the last, partial vector goes through a
// zero-padded buffer (lanes are independent: the padding changes nothing).
#define NASX_SLEEF_APPLY(NAME, TARGET, T, W, V, LOAD, STORE, SET1)                                 \
  __attribute__((target(TARGET))) void NAME##1(void* fn, const T* in, T* out, int64_t n) {         \
    auto f = reinterpret_cast<V (*)(V)>(fn);                                                       \
    int64_t i = 0;                                                                                 \
    for (; i + W <= n; i += W) STORE(out + i, f(LOAD(in + i)));                                    \
    if (i < n) {                                                                                   \
      T buf[W] = {};                                                                               \
      std::memcpy(buf, in + i, (n - i) * sizeof(T));                                               \
      STORE(buf, f(LOAD(buf)));                                                                    \
      std::memcpy(out + i, buf, (n - i) * sizeof(T));                                              \
    }                                                                                              \
  }                                                                                                \
  __attribute__((target(TARGET))) void NAME##2(void* fn, const T* in, T e, T* out, int64_t n) {    \
    auto f = reinterpret_cast<V (*)(V, V)>(fn);                                                    \
    const V ev = SET1(e);                                                                          \
    int64_t i = 0;                                                                                 \
    for (; i + W <= n; i += W) STORE(out + i, f(LOAD(in + i), ev));                                \
    if (i < n) {                                                                                   \
      T buf[W] = {};                                                                               \
      std::memcpy(buf, in + i, (n - i) * sizeof(T));                                               \
      STORE(buf, f(LOAD(buf), ev));                                                                \
      std::memcpy(out + i, buf, (n - i) * sizeof(T));                                              \
    }                                                                                              \
  }

NASX_SLEEF_APPLY(avx2_f, "avx2,fma", float, 8, __m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps)
NASX_SLEEF_APPLY(avx2_d, "avx2,fma", double, 4, __m256d, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd)
NASX_SLEEF_APPLY(avx512_f, "avx512f", float, 16, __m512, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps)
NASX_SLEEF_APPLY(avx512_d, "avx512f", double, 8, __m512d, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd)
#undef NASX_SLEEF_APPLY

void* sleef(const char* name) { return dlsym(RTLD_DEFAULT, name); }
#endif

TorchMath resolve() {
  TorchMath m;
#if NASX_TORCH_SLEEF
  if (at::hasMKL()) {
    m.sqrt_f = sleef("vmsSqrt");
    m.sqrt_d = sleef("vmdSqrt");
  }
  // The names Vectorized<T>::exp / log1p / pow call in torch's kernels of each capability.
  struct Names {
    const char *exp_f, *log1p_f, *pow_f, *exp_d, *log1p_d, *pow_d;
    TorchMath::Isa isa;
    int lanes_float, lanes_double;
  };
  static const Names kAvx512{"Sleef_expf16_u10", "Sleef_log1pf16_u10", "Sleef_powf16_u10", "Sleef_expd8_u10",
                             "Sleef_log1pd8_u10", "Sleef_powd8_u10", TorchMath::Isa::Avx512, 16, 8};
  static const Names kAvx2{"Sleef_expf8_u10", "Sleef_log1pf8_u10", "Sleef_powf8_u10", "Sleef_expd4_u10",
                           "Sleef_log1pd4_u10", "Sleef_powd4_u10", TorchMath::Isa::Avx2, 8, 4};
  const std::string cap = at::get_cpu_capability();
  const Names* names = cap == "AVX512" ? &kAvx512 : cap == "AVX2" ? &kAvx2 : nullptr;
  if (names) {
    m.exp_f = sleef(names->exp_f);
    m.log1p_f = sleef(names->log1p_f);
    m.pow_f = sleef(names->pow_f);
    m.exp_d = sleef(names->exp_d);
    m.log1p_d = sleef(names->log1p_d);
    m.pow_d = sleef(names->pow_d);
    m.isa = names->isa;
    m.lanes_float = names->lanes_float;
    m.lanes_double = names->lanes_double;
  }
  if (m.isa != TorchMath::Isa::Libm &&
      !(m.exp_f && m.log1p_f && m.pow_f && m.exp_d && m.log1p_d && m.pow_d)) {
    const TorchMath libm;  // a torch without these symbols: libm (close, not bit-identical)
    m.isa = libm.isa;
    m.lanes_float = libm.lanes_float;
    m.lanes_double = libm.lanes_double;
  }
#endif
  return m;
}

}  // namespace

const TorchMath& TorchMath::get() {
  static const TorchMath m = resolve();
  return m;
}

// Each entry: SLEEF for torch's capability, else libm element by element (what
// torch's DEFAULT Vectorized<T> does: map(std::exp), std::pow(T, T), ...).
#if NASX_TORCH_SLEEF
#define NASX_DISPATCH1(FN, T, SUF, LIBM)                                        \
  if (isa == Isa::Avx512) return avx512_##SUF##1(FN, in, out, n);               \
  if (isa == Isa::Avx2) return avx2_##SUF##1(FN, in, out, n);                   \
  for (int64_t i = 0; i < n; ++i) out[i] = LIBM(in[i]);
#define NASX_DISPATCH2(FN, T, SUF, LIBM)                                        \
  if (isa == Isa::Avx512) return avx512_##SUF##2(FN, in, e, out, n);            \
  if (isa == Isa::Avx2) return avx2_##SUF##2(FN, in, e, out, n);                \
  for (int64_t i = 0; i < n; ++i) out[i] = LIBM(in[i], e);
#else
#define NASX_DISPATCH1(FN, T, SUF, LIBM) for (int64_t i = 0; i < n; ++i) out[i] = LIBM(in[i]);
#define NASX_DISPATCH2(FN, T, SUF, LIBM) for (int64_t i = 0; i < n; ++i) out[i] = LIBM(in[i], e);
#endif

void TorchMath::exp(const float* in, float* out, int64_t n) const { NASX_DISPATCH1(exp_f, float, f, std::exp) }
void TorchMath::exp(const double* in, double* out, int64_t n) const { NASX_DISPATCH1(exp_d, double, d, std::exp) }
void TorchMath::log1p(const float* in, float* out, int64_t n) const { NASX_DISPATCH1(log1p_f, float, f, std::log1p) }
void TorchMath::log1p(const double* in, double* out, int64_t n) const {
  NASX_DISPATCH1(log1p_d, double, d, std::log1p)
}
void TorchMath::pow(const float* in, float e, float* out, int64_t n) const { NASX_DISPATCH2(pow_f, float, f, std::pow) }
void TorchMath::pow(const double* in, double e, double* out, int64_t n) const {
  NASX_DISPATCH2(pow_d, double, d, std::pow)
}
#undef NASX_DISPATCH1
#undef NASX_DISPATCH2

// vm?Sqrt(n, in, out, VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE), torch's call.
// n passed as 64 bits: right for an LP64 MKL (int, the low half) and an ILP64 one.
namespace {
constexpr int64_t kVmlMode = 0x2 | 0x140000 | 0x100;
constexpr int64_t kVmlChunk = int64_t(1) << 30;
}  // namespace

void TorchMath::sqrt(const float* in, float* out, int64_t n) const {
  if (sqrt_f) {
    auto f = reinterpret_cast<void (*)(int64_t, const float*, float*, int64_t)>(sqrt_f);
    for (int64_t i = 0; i < n; i += kVmlChunk) f(std::min(kVmlChunk, n - i), in + i, out + i, kVmlMode);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
}

void TorchMath::sqrt(const double* in, double* out, int64_t n) const {
  if (sqrt_d) {
    auto f = reinterpret_cast<void (*)(int64_t, const double*, double*, int64_t)>(sqrt_d);
    for (int64_t i = 0; i < n; i += kVmlChunk) f(std::min(kVmlChunk, n - i), in + i, out + i, kVmlMode);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
}

}  // namespace nasx::ops
