#pragma once
// The draft's int8 KV mirror (cache/kv_cache.h, draft_kv="int8"): rows quantized from the exact cache,
// and causal grouped-query attention over them. Symmetric int8 with one float32 scale per (position,
// KV head): x ~= q * scale, scale = max|x| / 127 over the head's D values. The draft reads a quarter of
// the exact cache's fp32 bytes per step; the full model never reads the mirror, so the output stays
// exactly the full model's. CPU tensors run the AVX2 kernel (or the reference), CUDA tensors the
// kernels of ops/cuda/attention_int8.cu; the mirror lives on the cache's device.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace dotf {

// One row of D values -> D int8 and its scale, the mirror's rounding (x ~= q * scale, scale = max|x| / 127);
// a row with a non-finite value gets zeros and scale NaN. Also the integer attention kernel's rounding of
// its queries (ops/cpu/attention_int8_vnni.cpp).
template <typename scalar_t>
void quantize_int8_row(const scalar_t* x, int64_t D, int8_t* q, float* scale) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t d = 0; d < D; ++d) {
    const float v = static_cast<float>(x[d]);
    finite = finite && std::isfinite(v);
    amax = std::max(amax, std::abs(v));
  }
  if (!finite) {
    std::fill(q, q + D, int8_t{0});
    *scale = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int64_t d = 0; d < D; ++d)
    q[d] = static_cast<int8_t>(std::clamp(std::nearbyint(static_cast<float>(x[d]) * inv), -127.0f, 127.0f));
  *scale = amax / 127.0f;
}

// Quantizes rows [start, start + count) of a layer's exact K and V into its mirror.
// k_cache, v_cache: [capacity, KVH, D] any float dtype (the exact slabs, rows already written)
// k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32 (contiguous, same device)
// device_start: [1] int64 or undefined: when given, the real start (CUDA graph replays; start is then
// its upper bound). A row with a non-finite value gets scale NaN (the draft rows that read it turn NaN
// and propose nothing).
void quantize_kv_rows(const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start, int64_t count,
                      at::Tensor& k_q, at::Tensor& v_q, at::Tensor& k_scale, at::Tensor& v_scale,
                      const at::Tensor& device_start = at::Tensor());

// Attention of T new queries over the mirror, as attention_with_cache over the dequantized rows.
// q: [T, H, D] rotated queries at positions start..start+T-1 (on the mirror's device)
// k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32; rows [0, start + T) valid
// returns: [T, H * D] in q's dtype. The fused AVX2 kernel (ops/cpu/attention_avx2.h, batch invariant,
// never reads past a row's position) for T <= kFusedAttentionMaxRows and float32/bfloat16/float16 q;
// else the reference. window: as for attention_with_cache (ops/attention.h, kAttentionSinks).
// device_start: as for quantize_kv_rows.
at::Tensor int8_attention_with_cache(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                     const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                     double scale, int64_t window = 0, const at::Tensor& device_start = at::Tensor());

// The reference: rows [0, start + T) dequantized to q's dtype, then attention_with_cache_reference.
// Same arguments as int8_attention_with_cache.
at::Tensor int8_attention_with_cache_reference(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                               const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                               double scale, int64_t window = 0);

}  // namespace dotf
