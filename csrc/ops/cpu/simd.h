// NASX_SIMD_CLONES compiles a hot loop twice, for AVX2 and for baseline x86-64,
// and picks one when the library loads: wheels stay portable and still use the
// 8-wide float units where the CPU has them.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__)
#define NASX_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NASX_SIMD_CLONES
#endif

#define NASX_ALWAYS_INLINE inline __attribute__((always_inline))
