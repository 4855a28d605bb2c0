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

#include "ops/attention.h"

#include "ops/cpu/simd.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>
#include <memory>
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

// out[r * ld_out + j] = <q_r, k_{s+j}> for R query rows (D apart in q) and the four keys s..s+3, each
// summed over D = 8n lanes in one fixed order (chunk 0, 1, ... then hsum4x8). Keys past last_key
// are read as last_key (their scores are never used), so the block never reads beyond the rows this
// forward wrote. Four keys per pass amortize the lane reduction; two rows share each key load.
template <typename T, int R>
DOTF_AVX2 inline void score_keys4(const float* q, int64_t D, const T* k, int64_t stride, int64_t s, int64_t last_key,
                                  float* out, int64_t ld_out) {
  const T* k0 = k + std::min(s, last_key) * stride;
  const T* k1 = k + std::min(s + 1, last_key) * stride;
  const T* k2 = k + std::min(s + 2, last_key) * stride;
  const T* k3 = k + std::min(s + 3, last_key) * stride;
  const __m256 z = _mm256_setzero_ps();
  __m256 a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
  for (int64_t d = 0; d < D; d += 8) {
    const __m256 q0 = _mm256_loadu_ps(q + d);
    const __m256 q1 = R > 1 ? _mm256_loadu_ps(q + D + d) : z;
    __m256 v0 = load8(k0 + d), v1 = load8(k1 + d), v2 = load8(k2 + d), v3 = load8(k3 + d);
    if constexpr (R > 1) simd::keep_in_register(v0, v1, v2, v3);
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
  _mm_storeu_ps(out, hsum4x8(a00, a01, a02, a03));
  if constexpr (R > 1) _mm_storeu_ps(out + ld_out, hsum4x8(a10, a11, a12, a13));
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
// Named accumulators, not an array: GCC kept an array's eight vectors on the stack and stored all of
// them on every key, which made this loop store-bound at a quarter of the FMA rate.
template <typename T, int C>
DOTF_AVX2 void accumulate_values(const float* weights, const T* v, int64_t stride, int64_t s0, int64_t s1, float* acc) {
  static_assert(C >= 1 && C <= 8, "up to 8 chunks of 8 lanes");
  const __m256 z = _mm256_setzero_ps();
#define DOTF_LOAD_ACC(i) __m256 a##i = C > i ? _mm256_loadu_ps(acc + 8 * i) : z;
  DOTF_LOAD_ACC(0) DOTF_LOAD_ACC(1) DOTF_LOAD_ACC(2) DOTF_LOAD_ACC(3)
  DOTF_LOAD_ACC(4) DOTF_LOAD_ACC(5) DOTF_LOAD_ACC(6) DOTF_LOAD_ACC(7)
#undef DOTF_LOAD_ACC
  for (int64_t s = s0; s < s1; ++s) {
    const __m256 w = _mm256_broadcast_ss(weights + s);
    const T* vs = v + s * stride;
#define DOTF_FMA_ACC(i) if constexpr (C > i) a##i = _mm256_fmadd_ps(w, load8(vs + 8 * i), a##i);
    DOTF_FMA_ACC(0) DOTF_FMA_ACC(1) DOTF_FMA_ACC(2) DOTF_FMA_ACC(3)
    DOTF_FMA_ACC(4) DOTF_FMA_ACC(5) DOTF_FMA_ACC(6) DOTF_FMA_ACC(7)
#undef DOTF_FMA_ACC
  }
#define DOTF_STORE_ACC(i) if constexpr (C > i) _mm256_storeu_ps(acc + 8 * i, a##i);
  DOTF_STORE_ACC(0) DOTF_STORE_ACC(1) DOTF_STORE_ACC(2) DOTF_STORE_ACC(3)
  DOTF_STORE_ACC(4) DOTF_STORE_ACC(5) DOTF_STORE_ACC(6) DOTF_STORE_ACC(7)
#undef DOTF_STORE_ACC
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

// Which keys a query row sees, as a compact index j in [0, n): key j for j < split, key j + gap after.
// Every key up to its position (gap 0, split n), or under a window (ops/attention.h) the first
// kAttentionSinks keys and its last `window` ones.
struct RowKeys {
  int64_t n, split, gap;
  int64_t key(int64_t j) const { return j < split ? j : j + gap; }
};

inline RowKeys row_keys(int64_t keys, int64_t window) {
  const int64_t gap = window > 0 ? std::max<int64_t>(0, keys - kAttentionSinks - window) : 0;
  return gap > 0 ? RowKeys{keys - gap, kAttentionSinks, gap} : RowKeys{keys, keys, 0};
}

// All G*T query rows of one KV head. Keys go in blocks shared by every row, so K and V stream from
// memory once per head (not once per row); within a row the order over keys is always ascending.
// (Serving several heads per key block reads the cache rows in address order, but its working set
// grows with the head count: no faster for SmolLM2's 3 KV heads, 1.8x slower for Llama-2-7B's 32.)
// Blocks run over each row's compact key index (RowKeys): the rows of one step share their keys, so a
// window changes which rows a block reads, not how many times.
// q: [T, H, D] (strides q_t, q_h); k, v: this head's rows, `stride` elements apart; out: [T, H * D].
// KV is T (the exact cache) or int8_t (the mirror, whose rows' scales are k_scale and v_scale).
template <typename T, typename KV>
DOTF_AVX2 void attend_kv_head(const T* q, int64_t q_t, int64_t q_h, const KV* k, const KV* v, int64_t stride,
                              const float* k_scale, const float* v_scale, int64_t kvh, int64_t G, int64_t T_rows,
                              int64_t H, int64_t D, int64_t start, int64_t window, float scale, T* out) {
  static_assert(kAttentionSinks % 4 == 0, "score_keys4 runs never straddle the sinks' end");
  constexpr bool kInt8 = std::is_same_v<KV, int8_t>;
  const int64_t rows = G * T_rows, last_key = start + T_rows - 1;
  // Row i is query head kvh * G + i / T_rows at position start + i % T_rows.
  std::vector<RowKeys> seen(rows);
  int64_t max_n = 0;
  for (int64_t i = 0; i < rows; ++i) {
    seen[i] = row_keys(start + i % T_rows + 1, window);
    max_n = std::max(max_n, seen[i].n);
  }
  const int64_t padded = (max_n + 7) / 8 * 8;
  std::vector<float> qf(rows * D), acc(rows * D, 0.0f);
  // Not zeroed (a verify at 8k tokens would clear 0.9 MB per head and layer): a row's scores are written
  // up to its n before anything reads them, and softmax_numerators fills the rest of its padding.
  const std::unique_ptr<float[]> scores(new float[rows * padded]);
  for (int64_t i = 0; i < rows; ++i) {
    const T* qi = q + (i % T_rows) * q_t + (kvh * G + i / T_rows) * q_h;
    for (int64_t d = 0; d < D; ++d) qf[i * D + d] = static_cast<float>(qi[d]) * scale;
  }
  for (int64_t j0 = 0; j0 < max_n; j0 += kKeyBlock) {
    for (int64_t i = 0; i < rows;) {  // two rows share each key load where they see the same keys
      const RowKeys& r = seen[i];
      const bool pair = i + 1 < rows && seen[i + 1].gap == r.gap;  // then key(j) is the same for both
      const int64_t j1 = std::min(j0 + kKeyBlock, pair ? std::max(r.n, seen[i + 1].n) : r.n);
      float* si = scores.get() + i * padded;
      for (int64_t j = j0; j < j1; j += 4) {
        if (pair)
          score_keys4<KV, 2>(qf.data() + i * D, D, k, stride, r.key(j), last_key, si + j, padded);
        else
          score_keys4<KV, 1>(qf.data() + i * D, D, k, stride, r.key(j), last_key, si + j, padded);
      }
      i += pair ? 2 : 1;
    }
  }
  std::vector<float> inv_sum(rows);
  for (int64_t i = 0; i < rows; ++i) {
    const RowKeys& r = seen[i];
    float* si = scores.get() + i * padded;
    auto scale_by = [&](const float* row_scale) {
      scale_rows(si, row_scale, r.split);
      scale_rows(si + r.split, row_scale + r.split + r.gap, r.n - r.split);
    };
    if constexpr (kInt8) scale_by(k_scale);
    inv_sum[i] = 1.0f / softmax_numerators(si, r.n);
    if constexpr (kInt8) scale_by(v_scale);
  }
  for (int64_t j0 = 0; j0 < max_n; j0 += kKeyBlock) {
    for (int64_t i = 0; i < rows; ++i) {
      const RowKeys& r = seen[i];
      const float* si = scores.get() + i * padded;
      const int64_t j1 = std::min(j0 + kKeyBlock, r.n);
      // Compact keys [a, b) of one run: weights si[a..b), value rows a + shift .. b + shift.
      auto run = [&](int64_t a, int64_t b, int64_t shift) {
        if (a < b) accumulate_row(si + a, v + (a + shift) * stride, stride, 0, b - a, D, acc.data() + i * D);
      };
      run(j0, std::min(j1, r.split), 0);
      run(std::max(j0, r.split), j1, r.gap);
    }
  }
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
void fused_attention(const at::Tensor& q, const KvHeads<KV>& kv, int64_t start, int64_t window, float scale,
                     at::Tensor& out) {
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
                     T_rows, H, D, start, window, scale, op);
    }
  });
}

// k_cache, v_cache: [capacity, KVH, D] (last dim contiguous, same strides).
template <typename T>
void fused_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start,
                     int64_t window, float scale, at::Tensor& out) {
  const KvHeads<T> kv{k_cache.const_data_ptr<T>(), v_cache.const_data_ptr<T>(), k_cache.size(1), k_cache.stride(1),
                      k_cache.stride(0)};
  fused_attention<T, T>(q, kv, start, window, scale, out);
}

// k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32 (all contiguous).
template <typename T>
void fused_int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                          const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start, int64_t window,
                          float scale, at::Tensor& out) {
  const int64_t capacity = k_q.size(1), D = k_q.size(2);
  const KvHeads<int8_t> kv{k_q.const_data_ptr<int8_t>(), v_q.const_data_ptr<int8_t>(), k_q.size(0), capacity * D,
                           D, k_scale.const_data_ptr<float>(), v_scale.const_data_ptr<float>(), capacity};
  fused_attention<T, int8_t>(q, kv, start, window, scale, out);
}

}  // namespace
#endif

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
  switch (q.scalar_type()) {
    case at::kFloat: fused_attention<float>(qc, kc, vc, start, window, s, out); break;
    case at::kBFloat16: fused_attention<c10::BFloat16>(qc, kc, vc, start, window, s, out); break;
    default: fused_attention<c10::Half>(qc, kc, vc, start, window, s, out); break;
  }
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
  switch (q.scalar_type()) {
    case at::kFloat: fused_int8_attention<float>(qc, k_q, v_q, k_scale, v_scale, start, window, s, out); break;
    case at::kBFloat16: fused_int8_attention<c10::BFloat16>(qc, k_q, v_q, k_scale, v_scale, start, window, s, out); break;
    default: fused_int8_attention<c10::Half>(qc, k_q, v_q, k_scale, v_scale, start, window, s, out); break;
  }
#endif
  return out;
}

}  // namespace dotf::avx2
