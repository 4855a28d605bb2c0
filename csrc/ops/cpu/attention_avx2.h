#pragma once
// The fused CPU attention kernel (attention_avx2.cpp): causal grouped-query attention of T new
// queries over a KV cache or over the draft's int8 mirror of it, fp32 arithmetic whatever the storage
// dtype, batch invariant (each row's result is independent of T). ops/attention.cpp runs it for
// decode, draft and verify sizes.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf::avx2 {

// Whether the kernel takes this input: an x86-64 CPU with AVX2+FMA, q on the CPU, q and k_cache of
// one dtype among float32/bfloat16/float16, head_dim a multiple of 8.
// q: [T, H, D]; k_cache: [capacity, KVH, D]
bool attention_supports(const at::Tensor& q, const at::Tensor& k_cache);

// q: [T, H, D] rotated queries at positions start..start+T-1
// k_cache, v_cache: [capacity, KVH, D] (last dim contiguous); rows [0, start + T) are valid
// window: 0, or each row sees only its attention sinks and last `window` keys (ops/attention.h).
// returns: [T, H * D]. Refuses an input attention_supports rejects.
at::Tensor attention_with_cache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t start, double scale, int64_t window = 0);

// Whether the int8 kernel takes this query: an x86-64 CPU with AVX2+FMA, q on the CPU in
// float32/bfloat16/float16, head_dim a multiple of 8.
bool int8_attention_supports(const at::Tensor& q);

// The same attention over int8 rows: key s of KV head h is k_q[h][s] * k_scale[h][s] (values alike).
// q: [T, H, D]; k_q, v_q: [KVH, capacity, D] int8, contiguous; k_scale, v_scale: [KVH, capacity]
// float32, contiguous; rows [0, start + T) are valid; window as above. returns: [T, H * D] in q's dtype.
at::Tensor int8_attention_with_cache(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                     const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                     double scale, int64_t window = 0);

}  // namespace dotf::avx2
