// CUDA rotary embedding of q and k fused with the KV-cache write: one thread per (token, head,
// rotation pair). Same arithmetic as rope_qkv_to_cache_cpu (ops/rope.cpp): every product is rounded
// to the storage dtype before the add, so results match the CPU bit for bit.
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

// qkv: [T, (H + 2*KVH) * D]; cos, sin: [P, D/2]; q_out: [T, H, D]
// k_cache, v_cache: [capacity, KVH, D] (row 0); rows start..start+T-1 are written, start read from
// device_start when it is set (CUDA graph replays)
// grid: (ceil((H + 2*KVH) * D/2 / blockDim.x), T)
template <typename T>
__global__ void rope_qkv_to_cache_kernel(const T* __restrict__ qkv, const T* __restrict__ cos,
                                         const T* __restrict__ sin, T* __restrict__ q_out,
                                         T* __restrict__ k_cache, T* __restrict__ v_cache, int num_heads,
                                         int num_kv_heads, int head_dim, int64_t start,
                                         const int64_t* __restrict__ device_start) {
  const int half = head_dim / 2;
  const int pairs = (num_heads + 2 * num_kv_heads) * half;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= pairs) return;
  const int64_t t = blockIdx.y;
  const int64_t pos = (device_start ? *device_start : start) + t;
  const int head = j / half;  // 0..H-1 query, H..H+KVH-1 key, then value heads
  const int i = j % half;
  const int64_t row = static_cast<int64_t>(num_heads + 2 * num_kv_heads) * head_dim;
  const int64_t kv_row = static_cast<int64_t>(num_kv_heads) * head_dim;
  const T* src = qkv + t * row + static_cast<int64_t>(head) * head_dim;

  if (head >= num_heads + num_kv_heads) {  // value: copied as is
    T* dst = v_cache + pos * kv_row + static_cast<int64_t>(head - num_heads - num_kv_heads) * head_dim;
    dst[i] = src[i];
    dst[i + half] = src[i + half];
    return;
  }
  const float c = to_float(cos[pos * half + i]), s = to_float(sin[pos * half + i]);
  const float lo = to_float(src[i]), hi = to_float(src[i + half]);
  const float lo_cos = mul_round<T>(lo, c), hi_sin = mul_round<T>(hi, s);
  const float hi_cos = mul_round<T>(hi, c), lo_sin = mul_round<T>(lo, s);
  T* dst = head < num_heads ? q_out + (t * num_heads + head) * head_dim
                            : k_cache + pos * kv_row + static_cast<int64_t>(head - num_heads) * head_dim;
  dst[i] = from_float<T>(__fsub_rn(lo_cos, hi_sin));
  dst[i + half] = from_float<T>(__fadd_rn(hi_cos, lo_sin));
}

template <typename T>
void launch_rope_qkv_to_cache(const T* qkv, const T* cos, const T* sin, T* q_out, T* k_cache, T* v_cache,
                              int64_t tokens, int num_heads, int num_kv_heads, int head_dim, int64_t start,
                              const int64_t* device_start, cudaStream_t stream) {
  if (tokens == 0) return;
  const int64_t pairs = static_cast<int64_t>(num_heads + 2 * num_kv_heads) * (head_dim / 2);
  if (pairs == 0) return;
  constexpr int kThreads = 128;
  const dim3 grid(static_cast<unsigned>(ceil_div(pairs, kThreads)), static_cast<unsigned>(tokens));
  rope_qkv_to_cache_kernel<T><<<grid, kThreads, 0, stream>>>(qkv, cos, sin, q_out, k_cache, v_cache, num_heads,
                                                             num_kv_heads, head_dim, start, device_start);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DOTF_INSTANTIATE(T)                                                                           \
  template void launch_rope_qkv_to_cache<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int, int, int, \
                                            int64_t, const int64_t*, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
