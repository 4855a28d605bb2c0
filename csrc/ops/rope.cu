// CUDA rotary embedding of q and k fused with the KV-cache write: one thread per (token, head,
// rotation pair). Same arithmetic as rope_qkv_to_cache_cpu (ops/rope.cpp): every product is rounded
// to the storage dtype before the add, so results match the CPU bit for bit.
#include "ops/rope.h"

#include "ops/cuda_utils.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <initializer_list>

namespace dotf {
namespace cuda {

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
                              const RopeQkvShape& s, cudaStream_t stream) {
  if (s.tokens == 0) return;
  const int64_t pairs = (s.num_heads + 2 * s.num_kv_heads) * (s.head_dim / 2);
  if (pairs == 0) return;
  constexpr int kThreads = 128;
  const dim3 grid(static_cast<unsigned>(ceil_div(pairs, kThreads)), static_cast<unsigned>(s.tokens));
  rope_qkv_to_cache_kernel<T><<<grid, kThreads, 0, stream>>>(
      qkv, cos, sin, q_out, k_cache, v_cache, static_cast<int>(s.num_heads), static_cast<int>(s.num_kv_heads),
      static_cast<int>(s.head_dim), s.start, s.device_start);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda

void rope_qkv_to_cache_cuda(const at::Tensor& qkv, const at::Tensor& rope_cos, const at::Tensor& rope_sin,
                            const RopeQkvShape& shape, at::Tensor& q_out, at::Tensor& k_cache, at::Tensor& v_cache) {
  // Shapes, bounds and contiguity are checked by rope_qkv_to_cache; devices, dtypes and limits here.
  DOTF_CHECK_ARG(shape.head_dim % 2 == 0, "rope_qkv_to_cache: head_dim must be even, got ", shape.head_dim);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&rope_cos, &rope_sin, &q_out, &k_cache, &v_cache}) {
    DOTF_CHECK_SAME_DEVICE(*t, qkv, "rope_qkv_to_cache tensors");
    DOTF_CHECK_SAME_DTYPE(*t, qkv, "rope_qkv_to_cache tensors");
  }
  DOTF_CHECK(rope_cos.is_contiguous() && rope_sin.is_contiguous(), "rotary tables must be contiguous");
  DOTF_CHECK_ARG(shape.tokens <= 65535, "rope_qkv_to_cache: at most 65535 tokens per call on CUDA, got ",
                 shape.tokens);
  DOTF_CHECK_ARG((shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim <= std::numeric_limits<int32_t>::max(),
                 "rope_qkv_to_cache: heads * head_dim too large");
  const c10::cuda::CUDAGuard guard(qkv.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(qkv.scalar_type(), "rope_qkv_to_cache", [&](auto tag) {
    using T = decltype(tag);
    cuda::launch_rope_qkv_to_cache<T>(qkv.data_ptr<T>(), rope_cos.data_ptr<T>(), rope_sin.data_ptr<T>(),
                                      q_out.data_ptr<T>(), k_cache.data_ptr<T>(), v_cache.data_ptr<T>(), shape,
                                      stream);
  });
}

}  // namespace dotf
