#pragma once
// Causal grouped-query attention of T new queries over a KV cache (decode T=1, draft, verify T=k+1,
// prefill T=prompt). Query t sits at position start + t and sees cached rows [0, start + t].
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf {

// q: [T, H, D] rotated queries at positions start..start+T-1
// k_cache, v_cache: [capacity, KVH, D]; rows [0, start + T) are valid
// returns: [T, H * D]
at::Tensor attention_with_cache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t start, double scale);

// The CPU implementation (ATen ops, softmax in float32 as transformers does); the CUDA kernel's reference.
at::Tensor attention_with_cache_cpu(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                    int64_t start, double scale);

#ifdef DOTF_WITH_CUDA
at::Tensor attention_with_cache_cuda(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     int64_t start, double scale);
#endif

}  // namespace dotf
