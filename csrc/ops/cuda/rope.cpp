// rope_qkv_to_cache_cuda: the tensor wrapper of the rotary embedding + KV-cache write kernel
// (ops/cuda/rope.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"
#include "ops/rope.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <initializer_list>
#include <limits>

namespace dotf {

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
                                      q_out.data_ptr<T>(), k_cache.data_ptr<T>(), v_cache.data_ptr<T>(),
                                      shape.tokens, static_cast<int>(shape.num_heads),
                                      static_cast<int>(shape.num_kv_heads), static_cast<int>(shape.head_dim),
                                      shape.start, shape.device_start, stream);
  });
}

}  // namespace dotf
