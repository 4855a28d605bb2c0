#pragma once
// Device-side helpers of dotf's CUDA kernels (ops/cuda/<op>.cu): float conversions of the storage
// types, aligned vector loads, warp/block reductions, and the instantiation of each launcher for the
// storage types. Kernels see raw pointers and c10 scalar types only.
//
// nvcc runs with -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
// -D__CUDA_NO_BFLOAT16_CONVERSIONS__: every conversion goes through c10::Half / c10::BFloat16,
// whose float conversions are host+device and round to nearest even, exactly as on the CPU.
#include "ops/cuda/kernels.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace dotf {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;

// ---- conversions ------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ float to_float(T x) { return static_cast<float>(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x) { return static_cast<T>(x); }

// a * b rounded to T, as the CPU computes `T * T` (c10 Half/BFloat16 arithmetic goes through float).
// __fmul_rn keeps nvcc from contracting a float product into a neighbouring add (FMA), so that
// float32 results match the CPU's bit for bit.
template <typename T>
__device__ __forceinline__ float mul_round(float a, float b) { return to_float(from_float<T>(__fmul_rn(a, b))); }

// ---- aligned vectors -------------------------------------------------------------------------
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) { return *reinterpret_cast<const Vec<T, N>*>(p); }
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& x) { *reinterpret_cast<Vec<T, N>*>(p) = x; }

// Unpacks a 32-bit word of the storage type into floats: 1 float32, or 2 half/bfloat16 (low first).
template <typename T> struct Word;
template <> struct Word<float> {
  static constexpr int kElems = 1;
  __device__ __forceinline__ static void unpack(uint32_t w, float* out) { out[0] = __uint_as_float(w); }
};
template <> struct Word<c10::Half> {
  static constexpr int kElems = 2;
  __device__ __forceinline__ static void unpack(uint32_t w, float* out) {
    out[0] = static_cast<float>(c10::Half(static_cast<uint16_t>(w & 0xffffu), c10::Half::from_bits()));
    out[1] = static_cast<float>(c10::Half(static_cast<uint16_t>(w >> 16), c10::Half::from_bits()));
  }
};
template <> struct Word<c10::BFloat16> {
  static constexpr int kElems = 2;
  __device__ __forceinline__ static void unpack(uint32_t w, float* out) {
    out[0] = __uint_as_float(w << 16);
    out[1] = __uint_as_float(w & 0xffff0000u);
  }
};

// ---- reductions --------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}

// Sums N floats per thread over the block; every thread gets the totals. blockDim.x must be a
// multiple of 32 and at most 1024. Contains __syncthreads(): call from every thread.
template <int N>
__device__ __forceinline__ void block_sum(float (&x)[N]) {
  __shared__ float partial[kWarpSize][N];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
#pragma unroll
  for (int i = 0; i < N; ++i) x[i] = warp_sum(x[i]);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) partial[warp][i] = x[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) x[i] = warp_sum(lane < warps ? partial[lane][i] : 0.0f);
  __syncthreads();  // `partial` may be reused by a later call
}

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
template <typename I>
__host__ __device__ constexpr I min_of(I a, I b) { return a < b ? a : b; }
template <typename I>
__host__ __device__ constexpr I max_of(I a, I b) { return a < b ? b : a; }

}  // namespace cuda
}  // namespace dotf

// Explicit instantiations of a launcher for the storage types the kernels support; M(T) declares
// one. The wrappers' dtype switch (cuda::dispatch_float_types in ops/cuda/wrapper.h) picks among
// the same three.
#define DOTF_FOR_CUDA_FLOAT_TYPES(M) M(float) M(c10::Half) M(c10::BFloat16)
