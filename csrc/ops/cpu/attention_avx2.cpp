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
// The draft's int8 mirror (cache/kv_cache.h) runs the same kernel body with int8 rows: row s of a KV
// head is its D int8 values times one float scale (k_scale[s], v_scale[s]). The int8 values are widened
// to fp32 as they load (exact), each score is then multiplied by its key's scale, and each softmax
// numerator by its value's scale before the value pass (the sum it is divided by stays unscaled).
#include "ops/cpu/attention_avx2.h"

#include "ops/cpu/simd.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

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

#ifdef DOTF_HAVE_AVX2_KERNEL
namespace {

using simd::load8;
DOTF_AVX2 inline __m256 load8(const int8_t* p) {  // the int8 mirror's values, widened exactly
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

constexpr int64_t kKeyBlock = 32;  // keys per block: their K (or V) rows stay in L1 while every row uses them

// The lane sums of four vectors, [sum(a0), sum(a1), sum(a2), sum(a3)], each added in the order
// ((0+1)+(2+3))+((4+5)+(6+7)) whichever slot it sits in, so a score never depends on its neighbours.
DOTF_AVX2 inline __m128 hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// scores[r][s + j] = <q_r, k_{s+j}> for R query rows (D apart in q) and the four keys s..s+3, each
// summed over D = 8n lanes in one fixed order (chunk 0, 1, ... then hsum4x8). Keys past last_key
// are read as last_key (their scores are never used), so the block never reads beyond the rows this
// forward wrote. Four keys per pass amortize the lane reduction; two rows share each key load.
template <typename T, int R>
DOTF_AVX2 inline void score_keys4(const float* q, int64_t D, const T* k, int64_t stride, int64_t s, int64_t last_key,
                                  float* scores, int64_t ld_scores) {
  const T* k0 = k + std::min(s, last_key) * stride;
  const T* k1 = k + std::min(s + 1, last_key) * stride;
  const T* k2 = k + std::min(s + 2, last_key) * stride;
  const T* k3 = k + std::min(s + 3, last_key) * stride;
  const __m256 z = _mm256_setzero_ps();
  __m256 a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
  for (int64_t d = 0; d < D; d += 8) {
    const __m256 q0 = _mm256_loadu_ps(q + d);
    const __m256 q1 = R > 1 ? _mm256_loadu_ps(q + D + d) : z;
    const __m256 v0 = load8(k0 + d), v1 = load8(k1 + d), v2 = load8(k2 + d), v3 = load8(k3 + d);
    a00 = _mm256_fmadd_ps(q0, v0, a00);
    a01 = _mm256_fmadd_ps(q0, v1, a01);
    a02 = _mm256_fmadd_ps(q0, v2, a02);
    a03 = _mm256_fmadd_ps(q0, v3, a03);
    if constexpr (R > 1) {
      a10 = _mm256_fmadd_ps(q1, v0, a10);
      a11 = _mm256_fmadd_ps(q1, v1, a11);
      a12 = _mm256_fmadd_ps(q1, v2, a12);
      a13 = _mm256_fmadd_ps(q1, v3, a13);
    }
  }
  _mm_storeu_ps(scores + s, hsum4x8(a00, a01, a02, a03));
  if constexpr (R > 1) _mm_storeu_ps(scores + ld_scores + s, hsum4x8(a10, a11, a12, a13));
}

// scores[s] <- exp(scores[s] - max) for s < keys (max over those keys); returns their sum.
// scores has room for keys rounded up to 8.
DOTF_AVX2 float softmax_numerators(float* scores, int64_t keys) {
  const float max_score = simd::max_of(scores, keys);  // skips a NaN score, which propagates through exp
  const int64_t padded = (keys + 7) / 8 * 8;
  std::fill(scores + keys, scores + padded, -std::numeric_limits<float>::infinity());  // exp -> exactly 0
  const __m256 shift = _mm256_set1_ps(max_score);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t s = 0; s < padded; s += 8) {
    const __m256 e = simd::exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + s), shift));
    _mm256_storeu_ps(scores + s, e);
    sum = _mm256_add_ps(sum, e);
  }
  return simd::hsum8(sum);
}

// x[s] *= row_scale[s] for s < n: the int8 mirror's per-row scales.
DOTF_AVX2 inline void scale_rows(float* x, const float* row_scale, int64_t n) {
  for (int64_t s = 0; s < n; ++s) x[s] *= row_scale[s];
}

// acc[0 .. 8C) += sum over s in [s0, s1) of weights[s] * v[s * stride + 0 .. 8C), s ascending.
template <typename T, int C>
DOTF_AVX2 void accumulate_values(const float* weights, const T* v, int64_t stride, int64_t s0, int64_t s1, float* acc) {
  __m256 a[C];
  for (int c = 0; c < C; ++c) a[c] = _mm256_loadu_ps(acc + 8 * c);
  for (int64_t s = s0; s < s1; ++s) {
    const __m256 w = _mm256_broadcast_ss(weights + s);
    const T* vs = v + s * stride;
    for (int c = 0; c < C; ++c) a[c] = _mm256_fmadd_ps(w, load8(vs + 8 * c), a[c]);
  }
  for (int c = 0; c < C; ++c) _mm256_storeu_ps(acc + 8 * c, a[c]);
}

template <typename T>
DOTF_AVX2 void accumulate_row(const float* weights, const T* v, int64_t stride, int64_t s0, int64_t s1, int64_t D,
                              float* acc) {
  // Up to 8 chunks (64 lanes) per sweep keeps the accumulators in registers.
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    const T* vd = v + d0;
    float* ad = acc + d0;
    switch (std::min<int64_t>(8, (D - d0) / 8)) {
      case 8: accumulate_values<T, 8>(weights, vd, stride, s0, s1, ad); break;
      case 7: accumulate_values<T, 7>(weights, vd, stride, s0, s1, ad); break;
      case 6: accumulate_values<T, 6>(weights, vd, stride, s0, s1, ad); break;
      case 5: accumulate_values<T, 5>(weights, vd, stride, s0, s1, ad); break;
      case 4: accumulate_values<T, 4>(weights, vd, stride, s0, s1, ad); break;
      case 3: accumulate_values<T, 3>(weights, vd, stride, s0, s1, ad); break;
      case 2: accumulate_values<T, 2>(weights, vd, stride, s0, s1, ad); break;
      default: accumulate_values<T, 1>(weights, vd, stride, s0, s1, ad); break;
    }
  }
}

// All G*T query rows of one KV head. Keys go in blocks shared by every row, so K and V stream from
// memory once per head (not once per row); within a row the order over keys is always ascending.
// (Serving several heads per key block reads the cache rows in address order, but its working set
// grows with the head count: no faster for SmolLM2's 3 KV heads, 1.8x slower for Llama-2-7B's 32.)
// q: [T, H, D] (strides q_t, q_h); k, v: this head's rows, `stride` elements apart; out: [T, H * D].
// KV is T (the exact cache) or int8_t (the mirror, whose rows' scales are k_scale and v_scale).
template <typename T, typename KV>
DOTF_AVX2 void attend_kv_head(const T* q, int64_t q_t, int64_t q_h, const KV* k, const KV* v, int64_t stride,
                              const float* k_scale, const float* v_scale, int64_t kvh, int64_t G, int64_t T_rows,
                              int64_t H, int64_t D, int64_t start, float scale, T* out) {
  constexpr bool kInt8 = std::is_same_v<KV, int8_t>;
  const int64_t rows = G * T_rows, max_keys = start + T_rows, padded = (max_keys + 7) / 8 * 8;
  std::vector<float> qf(rows * D), scores(rows * padded), acc(rows * D, 0.0f);
  // Row i is query head kvh * G + i / T_rows at position start + i % T_rows; it sees keys [0, keys(i)).
  auto keys = [&](int64_t i) { return start + i % T_rows + 1; };
  for (int64_t i = 0; i < rows; ++i) {
    const T* qi = q + (i % T_rows) * q_t + (kvh * G + i / T_rows) * q_h;
    for (int64_t d = 0; d < D; ++d) qf[i * D + d] = static_cast<float>(qi[d]) * scale;
  }
  for (int64_t s0 = 0; s0 < max_keys; s0 += kKeyBlock) {
    for (int64_t i = 0; i < rows; i += 2) {  // two rows share each key load
      const bool pair = i + 1 < rows;
      const int64_t s1 = std::min(s0 + kKeyBlock, pair ? std::max(keys(i), keys(i + 1)) : keys(i));
      float* si = scores.data() + i * padded;
      for (int64_t s = s0; s < s1; s += 4) {
        if (pair)
          score_keys4<KV, 2>(qf.data() + i * D, D, k, stride, s, max_keys - 1, si, padded);
        else
          score_keys4<KV, 1>(qf.data() + i * D, D, k, stride, s, max_keys - 1, si, padded);
      }
    }
  }
  std::vector<float> inv_sum(rows);
  for (int64_t i = 0; i < rows; ++i) {
    float* si = scores.data() + i * padded;
    if constexpr (kInt8) scale_rows(si, k_scale, keys(i));
    inv_sum[i] = 1.0f / softmax_numerators(si, keys(i));
    if constexpr (kInt8) scale_rows(si, v_scale, keys(i));
  }
  for (int64_t s0 = 0; s0 < max_keys; s0 += kKeyBlock)
    for (int64_t i = 0; i < rows; ++i)
      accumulate_row(scores.data() + i * padded, v, stride, s0, std::min(s0 + kKeyBlock, keys(i)), D,
                     acc.data() + i * D);
  for (int64_t i = 0; i < rows; ++i) {
    T* oi = out + (i % T_rows) * H * D + (kvh * G + i / T_rows) * D;
    for (int64_t d = 0; d < D; ++d) oi[d] = static_cast<T>(acc[i * D + d] * inv_sum[i]);
  }
}

// KVH heads' rows: head h's row s at k + h * head + s * row (v alike); for the int8 mirror, its
// scale at k_scale + h * scale_head + s (v_scale alike), else the scales are null.
template <typename KV>
struct KvHeads {
  const KV* k;
  const KV* v;
  int64_t KVH, head, row;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  int64_t scale_head = 0;
};

// q: [T, H, D]; out: [T, H * D].
template <typename T, typename KV>
void fused_attention(const at::Tensor& q, const KvHeads<KV>& kv, int64_t start, float scale, at::Tensor& out) {
  const int64_t T_rows = q.size(0), H = q.size(1), D = q.size(2), KVH = kv.KVH, G = H / KVH;
  const T* qp = q.const_data_ptr<T>();
  T* op = out.mutable_data_ptr<T>();
  // One task per KV head: each is independent and computes the same numbers on any thread.
  const int64_t grain = (start + T_rows) * G * T_rows * D < 65536 ? KVH : 1;
  at::parallel_for(0, KVH, grain, [&](int64_t begin, int64_t end) {
    for (int64_t kvh = begin; kvh < end; ++kvh) {
      const int64_t sh = kvh * kv.scale_head;
      attend_kv_head(qp, q.stride(0), q.stride(1), kv.k + kvh * kv.head, kv.v + kvh * kv.head, kv.row,
                     kv.k_scale ? kv.k_scale + sh : nullptr, kv.v_scale ? kv.v_scale + sh : nullptr, kvh, G,
                     T_rows, H, D, start, scale, op);
    }
  });
}

// k_cache, v_cache: [capacity, KVH, D] (last dim contiguous, same strides).
template <typename T>
void fused_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start,
                     float scale, at::Tensor& out) {
  const KvHeads<T> kv{k_cache.const_data_ptr<T>(), v_cache.const_data_ptr<T>(), k_cache.size(1), k_cache.stride(1),
                      k_cache.stride(0)};
  fused_attention<T, T>(q, kv, start, scale, out);
}

// k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32 (all contiguous).
template <typename T>
void fused_int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                          const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start, float scale,
                          at::Tensor& out) {
  const int64_t capacity = k_q.size(1), D = k_q.size(2);
  const KvHeads<int8_t> kv{k_q.const_data_ptr<int8_t>(), v_q.const_data_ptr<int8_t>(), k_q.size(0), capacity * D,
                           D, k_scale.const_data_ptr<float>(), v_scale.const_data_ptr<float>(), capacity};
  fused_attention<T, int8_t>(q, kv, start, scale, out);
}

}  // namespace
#endif

at::Tensor attention_with_cache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t start, double scale) {
  TORCH_CHECK(attention_supports(q, k_cache), "fused CPU attention: unsupported input");
  at::Tensor out = at::empty({q.size(0), q.size(1) * q.size(2)}, q.options());
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  // The kernel walks K and V with one set of strides (the cache's slabs always share them).
  const bool shared_strides = k_cache.stride(2) == 1 && v_cache.strides() == k_cache.strides();
  const at::Tensor kc = shared_strides ? k_cache : k_cache.contiguous();
  const at::Tensor vc = shared_strides ? v_cache : v_cache.contiguous();
  const auto s = static_cast<float>(scale);
  switch (q.scalar_type()) {
    case at::kFloat: fused_attention<float>(qc, kc, vc, start, s, out); break;
    case at::kBFloat16: fused_attention<c10::BFloat16>(qc, kc, vc, start, s, out); break;
    default: fused_attention<c10::Half>(qc, kc, vc, start, s, out); break;
  }
#endif
  return out;
}

at::Tensor int8_attention_with_cache(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                     const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                     double scale) {
  TORCH_CHECK(int8_attention_supports(q), "fused CPU int8 attention: unsupported input");
  at::Tensor out = at::empty({q.size(0), q.size(1) * q.size(2)}, q.options());
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor qc = q.stride(2) == 1 ? q : q.contiguous();
  const auto s = static_cast<float>(scale);
  switch (q.scalar_type()) {
    case at::kFloat: fused_int8_attention<float>(qc, k_q, v_q, k_scale, v_scale, start, s, out); break;
    case at::kBFloat16: fused_int8_attention<c10::BFloat16>(qc, k_q, v_q, k_scale, v_scale, start, s, out); break;
    default: fused_int8_attention<c10::Half>(qc, k_q, v_q, k_scale, v_scale, start, s, out); break;
  }
#endif
  return out;
}

}  // namespace dotf::avx2
