// The one host/device marker of nasx's shared math headers.
//
// NASX_HD: compiled for the host and, under nvcc, for the device too; always
// inlined on the device (these are small per-element helpers).
// NASX_HD_RECURSIVE: the same without forced inlining, for a function that calls
// itself (nvcc cannot inline recursion).
#pragma once

#if defined(__CUDACC__)
#define NASX_HD __host__ __device__ __forceinline__
#define NASX_HD_RECURSIVE __host__ __device__ inline
#else
#define NASX_HD inline
#define NASX_HD_RECURSIVE inline
#endif
