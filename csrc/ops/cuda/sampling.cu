// CUDA greedy choice + top-1 probability: one block per row, one pass over the vocabulary with an
// online (max, first argmax, sum of exp(l - max)) state per thread, merged by warp shuffles and
// shared memory. Same results as argmax_top1_cpu (ops/sampling.cpp): the first index of the
// maximum, 1 / sum(exp(l - max)) in float32, id -1 (and probability 0) for rows holding NaN or +inf or
// nothing but -inf (-inf is a removed token).
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

struct Top1 {
  float max;    // running maximum (-inf when nothing seen)
  int index;    // its first index (INT_MAX when nothing seen)
  float sum;    // sum of exp(l - max) over the elements seen
  bool finite;  // no NaN / +inf seen
};

template <bool WITH_PROB>
__device__ __forceinline__ void top1_push(Top1& s, float x, int index) {
  s.finite &= !isnan(x) && x != INFINITY;
  if (x > s.max) {  // strict: the first index wins ties; NaN never wins
    if (WITH_PROB) s.sum = s.sum * expf(s.max - x) + 1.0f;  // expf(-inf) = 0 on the first element
    s.max = x;
    s.index = index;
  } else if (WITH_PROB && x != -INFINITY) {  // a removed token adds nothing (and -inf - -inf is NaN)
    s.sum += expf(x - s.max);
  }
}

template <bool WITH_PROB>
__device__ __forceinline__ Top1 top1_merge(const Top1& a, const Top1& b) {
  Top1 r;
  r.finite = a.finite && b.finite;
  const bool take_b = b.max > a.max || (b.max == a.max && b.index < a.index);
  r.max = take_b ? b.max : a.max;
  r.index = take_b ? b.index : a.index;
  r.sum = 0.0f;
  if (WITH_PROB) {
    if (a.max != -INFINITY) r.sum += a.sum * expf(a.max - r.max);
    if (b.max != -INFINITY) r.sum += b.sum * expf(b.max - r.max);
  }
  return r;
}

template <bool WITH_PROB>
__device__ __forceinline__ Top1 top1_warp(Top1 s) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) {
    Top1 other;
    other.max = __shfl_xor_sync(kFullMask, s.max, o);
    other.index = __shfl_xor_sync(kFullMask, s.index, o);
    other.sum = __shfl_xor_sync(kFullMask, s.sum, o);
    other.finite = __shfl_xor_sync(kFullMask, static_cast<int>(s.finite), o) != 0;
    s = top1_merge<WITH_PROB>(s, other);
  }
  return s;
}

// logits: [rows, vocab]; ids: [rows] int64; probs: [rows] float32. grid: rows.
// VEC elements per load: vocab % VEC == 0 and logits VEC-aligned when VEC > 1.
template <typename T, int VEC, bool WITH_PROB>
__global__ void argmax_top1_kernel(const T* __restrict__ logits, int vocab, int64_t* __restrict__ ids,
                                   float* __restrict__ probs) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  Top1 s{-INFINITY, INT_MAX, 0.0f, true};
  const int nvec = vocab / VEC;
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {  // each thread sees its indices in order
    const Vec<T, VEC> v = load_vec<T, VEC>(x + static_cast<int64_t>(i) * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) top1_push<WITH_PROB>(s, to_float(v.v[j]), i * VEC + j);
  }
  s = top1_warp<WITH_PROB>(s);

  __shared__ Top1 partial[kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  if (lane == 0) partial[warp] = s;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / kWarpSize;
    s = lane < warps ? partial[lane] : Top1{-INFINITY, INT_MAX, 0.0f, true};
    s = top1_warp<WITH_PROB>(s);
    if (lane == 0) {
      const bool ok = s.finite && s.index != INT_MAX;
      ids[row] = ok ? s.index : -1;
      probs[row] = ok && WITH_PROB ? 1.0f / s.sum : 0.0f;
    }
  }
}

template <typename T, bool WITH_PROB>
void launch_argmax_top1_impl(const T* logits, int64_t rows, int vocab, int64_t* ids, float* probs,
                             cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = vocab % kVec == 0 && aligned_to(logits, 16);
  const int64_t work = vec ? vocab / kVec : vocab;
  const int threads = static_cast<int>(min_of<int64_t>(1024, max_of<int64_t>(32, ceil_div(work, 32) * 32)));
  if (vec) {
    argmax_top1_kernel<T, kVec, WITH_PROB><<<rows, threads, 0, stream>>>(logits, vocab, ids, probs);
  } else {
    argmax_top1_kernel<T, 1, WITH_PROB><<<rows, threads, 0, stream>>>(logits, vocab, ids, probs);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void launch_argmax_top1(const T* logits, int64_t rows, int vocab, int64_t* ids, float* probs, bool with_prob,
                        cudaStream_t stream) {
  if (rows == 0) return;
  if (with_prob) {
    launch_argmax_top1_impl<T, true>(logits, rows, vocab, ids, probs, stream);
  } else {
    launch_argmax_top1_impl<T, false>(logits, rows, vocab, ids, probs, stream);
  }
}

#define DOTF_INSTANTIATE(T) \
  template void launch_argmax_top1<T>(const T*, int64_t, int, int64_t*, float*, bool, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
