// The fused CPU attention kernel for decode, draft and verify (a few new queries; ops/attention.cpp
// sends prefills elsewhere). Each query row streams exactly the keys it sees -- scores, softmax and
// the weighted sum of values in one pass each, fp32 arithmetic whatever the storage dtype -- so:
//   * a row's result depends on its own keys only, in one fixed order, never on T, the other rows or
//     the thread count: a verify row is bitwise the row a decoding step computes (batch invariance,
//     which fp32 speculation relies on to equal plain decoding token for token);
//   * masked keys are never read, so a non-finite value cached for a later position (a rejected
//     draft) cannot reach an earlier row (no 0 * NaN);
//   * it reads K and V near memory speed instead of paying ATen's per-op overheads, which dominate
//     these small shapes (measured in bench/README.md).
// The body lives in attention_kernel.h, built here for AVX2 and in attention_avx512.cpp for AVX512VL
// (chosen at run time, same bits). The draft's int8 mirror (cache/kv_cache.h) runs the same kernel
// body with int8 rows: row s of a KV head is its D int8 values times one float scale (k_scale[s],
// v_scale[s]). The int8 values are widened to fp32 as they load (exact), each score is then multiplied
// by its key's scale, and each softmax numerator by its value's scale before the value pass (the sum
// it is divided by stays unscaled). Where the CPU has AVX-512 VNNI, the mirror runs an integer kernel
// instead (attention_int8_vnni.cpp: queries and softmax weights quantized too, about twice as fast).
#include "ops/cpu/attention_avx2.h"

#include "ops/cpu/attention_kernel.h"
#include "ops/cpu/features.h"

#include <ATen/ops/empty.h>

#ifdef DOTF_HAVE_AVX2_KERNEL
#define DOTF_ATTN_NS attention_avx2_build
#define DOTF_ATTN_TARGET DOTF_AVX2
#define DOTF_ATTN_SCORE_ROWS 2
#define DOTF_ATTN_VALUE_ROWS 1
#include "ops/cpu/attention_kernel.h"
#endif

namespace dotf::avx2 {

bool attention_supports(const at::Tensor& q, const at::Tensor& k_cache) {
  const at::ScalarType dt = q.scalar_type();
  return cpu_has_avx2_fma() && q.device().is_cpu() && q.size(2) % 8 == 0 && k_cache.scalar_type() == dt &&
         (dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf);
}

bool int8_attention_supports(const at::Tensor& q) {
  const at::ScalarType dt = q.scalar_type();
  return cpu_has_avx2_fma() && q.device().is_cpu() && q.size(2) % 8 == 0 &&
         (dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf);
}

at::Tensor attention_with_cache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t start, double scale, int64_t window) {
  TORCH_CHECK(attention_supports(q, k_cache), "fused CPU attention: unsupported input");
  at::Tensor out = at::empty({q.size(0), q.size(1) * q.size(2)}, q.options());
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  // The kernel walks K and V with one set of strides (the cache's slabs always share them).
  const bool shared_strides = k_cache.stride(2) == 1 && v_cache.strides() == k_cache.strides();
  const at::Tensor kc = shared_strides ? k_cache : k_cache.contiguous();
  const at::Tensor vc = shared_strides ? v_cache : v_cache.contiguous();
  const auto s = static_cast<float>(scale);
  if (avx512vl_enabled())
    attention_avx512_build::attention(qc, kc, vc, start, window, s, out);
  else
    attention_avx2_build::attention(qc, kc, vc, start, window, s, out);
#endif
  return out;
}

at::Tensor int8_attention_with_cache(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                     const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                     double scale, int64_t window) {
  TORCH_CHECK(int8_attention_supports(q), "fused CPU int8 attention: unsupported input");
  at::Tensor out = at::empty({q.size(0), q.size(1) * q.size(2)}, q.options());
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  const auto s = static_cast<float>(scale);
  if (int8_attention_vnni_enabled(q.size(2)))
    attention_int8_vnni_build::int8_attention(qc, k_q, v_q, k_scale, v_scale, start, window, s, out);
  else if (avx512vl_enabled())
    attention_avx512_build::int8_attention(qc, k_q, v_q, k_scale, v_scale, start, window, s, out);
  else
    attention_avx2_build::int8_attention(qc, k_q, v_q, k_scale, v_scale, start, window, s, out);
#endif
  return out;
}

}  // namespace dotf::avx2
