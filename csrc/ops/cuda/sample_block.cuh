#pragma once
// Block primitives of the sampling kernels (ops/cuda/sample_warp.cu, ops/cuda/sample.cu), which run one
// block of kThreads per row. Every reduction combines its partials in a fixed order, so a result is the
// same bits in every thread and on every run: a seed reproduces a call. Included by those two files only.
#include "ops/cuda/utils.cuh"

namespace dotf::cuda::sampling {

constexpr int kThreads = 1024;  // per block: the kernels are launched with exactly this many
constexpr int kWarps = kThreads / kWarpSize;

__device__ __forceinline__ int lane_id() { return threadIdx.x % kWarpSize; }
__device__ __forceinline__ int warp_id() { return threadIdx.x / kWarpSize; }

struct Plus {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a < b ? b : a; }
};
struct Min {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return b < a ? b : a; }
};

// x reduced over the block with a commutative op; every thread gets the result. The butterfly hands both
// lanes of a pair the same operands and the warp partials are combined in warp order, so the result is
// bitwise the same in every thread. Contains __syncthreads(): call from every thread.
template <typename T, typename Op>
__device__ T block_reduce(T x, Op op) {
  __shared__ T partial[kWarps];
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(kFullMask, x, o));
  if (lane_id() == 0) partial[warp_id()] = x;
  __syncthreads();
  x = partial[0];
  for (int w = 1; w < kWarps; ++w) x = op(x, partial[w]);
  __syncthreads();  // `partial` may be reused by the next call
  return x;
}

// Inclusive prefix sum over the lanes of a warp (lane order), the same arithmetic on every call: a draw
// that walks a segment again reproduces the sums that chose it.
template <typename T>
__device__ __forceinline__ T warp_inclusive_sum(T x) {
  const int lane = lane_id();
#pragma unroll
  for (int o = 1; o < kWarpSize; o <<= 1) {
    const T y = __shfl_up_sync(kFullMask, x, o);
    if (lane >= o) x += y;
  }
  return x;
}

}  // namespace dotf::cuda::sampling
