// The fused CPU attention kernel's body (design: attention_avx2.cpp), compiled once per instruction set:
// attention_avx2.cpp builds it for AVX2 (16 vector registers: two query rows share each key load, one row
// per value load), attention_avx512.cpp for AVX512VL (32 registers: four rows per key load, three per
// value load). Each row's arithmetic is the same chain of operations in both builds, so they give the same
// bits; the wider build only reuses each loaded key and value row for more query rows.
// A file that includes the body defines first:
//   DOTF_ATTN_NS          the namespace its copy lives in (a distinct one per file: no ODR clash)
//   DOTF_ATTN_TARGET      the function attribute (target) its code is compiled for
//   DOTF_ATTN_SCORE_ROWS  query rows per key load in the score pass: 2 or 4
//   DOTF_ATTN_VALUE_ROWS  query rows per value load in the value pass: 1 or 3
#ifndef DOTF_ATTENTION_KERNEL_BUILDS
#define DOTF_ATTENTION_KERNEL_BUILDS
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf::avx2 {
// Each build's entries; the caller has checked the inputs (attention_avx2.cpp).
#define DOTF_DECLARE_ATTENTION_BUILD(ns)                                                                      \
  namespace ns {                                                                                              \
  void attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start,    \
                 int64_t window, float scale, at::Tensor& out);                                               \
  void int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,                      \
                      const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start, int64_t window,    \
                      float scale, at::Tensor& out);                                                          \
  }
DOTF_DECLARE_ATTENTION_BUILD(attention_avx2_build)
DOTF_DECLARE_ATTENTION_BUILD(attention_avx512_build)
#undef DOTF_DECLARE_ATTENTION_BUILD
// The int8 mirror's integer kernel (attention_int8_vnni.cpp), head_dim a multiple of 32.
namespace attention_int8_vnni_build {
void int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q, const at::Tensor& k_scale,
                    const at::Tensor& v_scale, int64_t start, int64_t window, float scale, at::Tensor& out);
}
}  // namespace dotf::avx2
#endif

#ifdef DOTF_ATTN_NS
#include "ops/attention.h"

#include "ops/cpu/attention_rows.h"
#include "ops/cpu/simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

namespace dotf::avx2::DOTF_ATTN_NS {
namespace {

using simd::load8;
DOTF_ATTN_TARGET inline __m256 load8(const int8_t* p) {  // the int8 mirror's values, widened exactly
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

constexpr int64_t kKeyBlock = 32;  // keys per block: their K (or V) rows stay in L1 while every row uses them

// The lane sums of four vectors, [sum(a0), sum(a1), sum(a2), sum(a3)], each added in the order
// ((0+1)+(2+3))+((4+5)+(6+7)) whichever slot it sits in, so a score never depends on its neighbours.
DOTF_ATTN_TARGET inline __m128 hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// out[r * ld_out + j] = <q_r, k_{s+j}> for R query rows (D apart in q) and the four keys s..s+3, each
// summed over D = 8n lanes in one fixed order (chunk 0, 1, ... then hsum4x8) whatever R is. Keys past
// last_key are read as last_key (their scores are never used), so the block never reads beyond the rows
// this forward wrote. Four keys per pass amortize the lane reduction; R rows share each key load.
template <typename T, int R>
DOTF_ATTN_TARGET inline void score_keys4(const float* q, int64_t D, const T* k, int64_t stride, int64_t s,
                                         int64_t last_key, float* out, int64_t ld_out) {
  static_assert(R >= 1 && R <= 4, "up to 4 rows per key load");
  const T* k0 = k + std::min(s, last_key) * stride;
  const T* k1 = k + std::min(s + 1, last_key) * stride;
  const T* k2 = k + std::min(s + 2, last_key) * stride;
  const T* k3 = k + std::min(s + 3, last_key) * stride;
  const __m256 z = _mm256_setzero_ps();
#define DOTF_ROW_ACC(r) __m256 a##r##0 = z, a##r##1 = z, a##r##2 = z, a##r##3 = z;
  DOTF_ROW_ACC(0) DOTF_ROW_ACC(1) DOTF_ROW_ACC(2) DOTF_ROW_ACC(3)
#undef DOTF_ROW_ACC
  for (int64_t d = 0; d < D; d += 8) {
    __m256 v0 = load8(k0 + d), v1 = load8(k1 + d), v2 = load8(k2 + d), v3 = load8(k3 + d);
    if constexpr (R > 1) simd::keep_in_register(v0, v1, v2, v3);
#define DOTF_ROW_FMA(r)                                  \
  if constexpr (R > r) {                                 \
    const __m256 qr = _mm256_loadu_ps(q + r * D + d);    \
    a##r##0 = _mm256_fmadd_ps(qr, v0, a##r##0);          \
    a##r##1 = _mm256_fmadd_ps(qr, v1, a##r##1);          \
    a##r##2 = _mm256_fmadd_ps(qr, v2, a##r##2);          \
    a##r##3 = _mm256_fmadd_ps(qr, v3, a##r##3);          \
  }
    DOTF_ROW_FMA(0) DOTF_ROW_FMA(1) DOTF_ROW_FMA(2) DOTF_ROW_FMA(3)
#undef DOTF_ROW_FMA
  }
#define DOTF_ROW_OUT(r) \
  if constexpr (R > r) _mm_storeu_ps(out + r * ld_out, hsum4x8(a##r##0, a##r##1, a##r##2, a##r##3));
  DOTF_ROW_OUT(0) DOTF_ROW_OUT(1) DOTF_ROW_OUT(2) DOTF_ROW_OUT(3)
#undef DOTF_ROW_OUT
}

// x[s] *= row_scale[s] for s < n: the int8 mirror's per-row scales.
DOTF_ATTN_TARGET inline void scale_rows(float* x, const float* row_scale, int64_t n) {
  for (int64_t s = 0; s < n; ++s) x[s] *= row_scale[s];
}

// For R rows sharing each V load: acc[r][0 .. 8C) += sum over s in [0, n) of w[r][s] * v[s * stride + 0 .. 8C),
// s ascending. Every lane's sum is the same chain of FMAs whatever R is, so a row's result does not depend
// on the rows beside it. Named accumulators, not an array: GCC kept an array's vectors on the stack and
// stored all of them on every key, which made this loop store-bound at a quarter of the FMA rate.
template <typename T, int R, int C>
DOTF_ATTN_TARGET void accumulate_values(const float* const* w, const T* v, int64_t stride, int64_t n,
                                        float* const* acc) {
  static_assert(R >= 1 && R <= 3 && C >= 1 && C <= 8, "up to 3 rows of 8 chunks of 8 lanes");
  const __m256 z = _mm256_setzero_ps();
// OP(r, c) for every accumulator a<r><c>: 3 rows of 8 chunks.
#define DOTF_EACH_ROW_CHUNK(OP, r) OP(r, 0) OP(r, 1) OP(r, 2) OP(r, 3) OP(r, 4) OP(r, 5) OP(r, 6) OP(r, 7)
#define DOTF_EACH_ACC(OP) DOTF_EACH_ROW_CHUNK(OP, 0) DOTF_EACH_ROW_CHUNK(OP, 1) DOTF_EACH_ROW_CHUNK(OP, 2)
#define DOTF_LOAD_ACC(r, c) __m256 a##r##c = R > r && C > c ? _mm256_loadu_ps(acc[r] + 8 * c) : z;
  DOTF_EACH_ACC(DOTF_LOAD_ACC)
#undef DOTF_LOAD_ACC
  for (int64_t s = 0; s < n; ++s) {
    const T* vs = v + s * stride;
    const __m256 w0 = _mm256_broadcast_ss(w[0] + s);
    const __m256 w1 = R > 1 ? _mm256_broadcast_ss(w[1] + s) : z;
    const __m256 w2 = R > 2 ? _mm256_broadcast_ss(w[2] + s) : z;
#define DOTF_FMA_ACC(c)                                               \
  if constexpr (C > c) {                                              \
    const __m256 x = load8(vs + 8 * c);                               \
    a0##c = _mm256_fmadd_ps(w0, x, a0##c);                            \
    if constexpr (R > 1) a1##c = _mm256_fmadd_ps(w1, x, a1##c);       \
    if constexpr (R > 2) a2##c = _mm256_fmadd_ps(w2, x, a2##c);       \
  }
    DOTF_FMA_ACC(0) DOTF_FMA_ACC(1) DOTF_FMA_ACC(2) DOTF_FMA_ACC(3)
    DOTF_FMA_ACC(4) DOTF_FMA_ACC(5) DOTF_FMA_ACC(6) DOTF_FMA_ACC(7)
#undef DOTF_FMA_ACC
  }
#define DOTF_STORE_ACC(r, c) if constexpr (R > r && C > c) _mm256_storeu_ps(acc[r] + 8 * c, a##r##c);
  DOTF_EACH_ACC(DOTF_STORE_ACC)
#undef DOTF_STORE_ACC
#undef DOTF_EACH_ACC
#undef DOTF_EACH_ROW_CHUNK
}

// accumulate_values over all D lanes: up to 8 chunks (64 lanes) per sweep keeps the accumulators in registers.
template <typename T, int R>
DOTF_ATTN_TARGET void accumulate_rows(const float* const* w, const T* v, int64_t stride, int64_t n, int64_t D,
                                      float* const* acc) {
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    float* ad[R];
    for (int r = 0; r < R; ++r) ad[r] = acc[r] + d0;
    const T* vd = v + d0;
    switch (std::min<int64_t>(8, (D - d0) / 8)) {
      case 8: accumulate_values<T, R, 8>(w, vd, stride, n, ad); break;
      case 7: accumulate_values<T, R, 7>(w, vd, stride, n, ad); break;
      case 6: accumulate_values<T, R, 6>(w, vd, stride, n, ad); break;
      case 5: accumulate_values<T, R, 5>(w, vd, stride, n, ad); break;
      case 4: accumulate_values<T, R, 4>(w, vd, stride, n, ad); break;
      case 3: accumulate_values<T, R, 3>(w, vd, stride, n, ad); break;
      case 2: accumulate_values<T, R, 2>(w, vd, stride, n, ad); break;
      default: accumulate_values<T, R, 1>(w, vd, stride, n, ad); break;
    }
  }
}

// The value pass of g rows of one gap over key block [j0, j0 + kKeyBlock): the keys all g rows see share
// each V load (accumulate_values), the rest of each row's keys in the block run alone. A row's keys form two
// runs (RowKeys: the sinks up to `split`, then the window, `gap` rows further on), and each row adds its
// keys in ascending order whatever g is.
// weights: row r's softmax numerators at weights + r * ld_w; acc: row r's D sums at acc + r * D.
template <typename KV>
DOTF_ATTN_TARGET void accumulate_block(const RowKeys* rows, int64_t g, int64_t j0, const float* weights, int64_t ld_w,
                                       const KV* v, int64_t stride, int64_t D, float* acc) {
  constexpr int64_t kNoSplit = std::numeric_limits<int64_t>::max();
  const int64_t split = rows[0].gap > 0 ? rows[0].split : kNoSplit, gap = rows[0].gap;
  int64_t end[DOTF_ATTN_VALUE_ROWS], shared_end = kNoSplit;  // each row's keys in the block end at end[r]
  for (int64_t r = 0; r < g; ++r)
    shared_end = std::min(shared_end, end[r] = std::clamp(rows[r].n, j0, j0 + kKeyBlock));
  // Keys [a, b) at offset `shift` (0 in the sinks' run, gap after) for rows [r0, r0 + count).
  auto run = [&](int64_t r0, int64_t count, int64_t a, int64_t b, int64_t shift) {
    if (a >= b) return;
    const float* w[DOTF_ATTN_VALUE_ROWS];
    float* sums[DOTF_ATTN_VALUE_ROWS];
    for (int64_t r = 0; r < count; ++r) {
      w[r] = weights + (r0 + r) * ld_w + a;
      sums[r] = acc + (r0 + r) * D;
    }
    const KV* va = v + (a + shift) * stride;
    switch (count) {
#if DOTF_ATTN_VALUE_ROWS >= 3
      case 3: accumulate_rows<KV, 3>(w, va, stride, b - a, D, sums); break;
      case 2: accumulate_rows<KV, 2>(w, va, stride, b - a, D, sums); break;
#endif
      default: accumulate_rows<KV, 1>(w, va, stride, b - a, D, sums); break;
    }
  };
  const int64_t sinks_end = std::min(shared_end, split), window_start = std::max(j0, split);
  run(0, g, j0, sinks_end, 0);
  for (int64_t r = 0; r < g; ++r) run(r, 1, sinks_end, std::min(end[r], split), 0);
  run(0, g, window_start, shared_end, gap);
  for (int64_t r = 0; r < g; ++r) run(r, 1, std::max(window_start, shared_end), end[r], gap);
}

// All G*T query rows of one KV head. Keys go in blocks shared by every row, so K and V stream from
// memory once per head (not once per row), and within a block DOTF_ATTN_SCORE_ROWS (DOTF_ATTN_VALUE_ROWS)
// rows share each key (value) load; within a row the order over keys is always ascending.
// (Serving several heads per key block reads the cache rows in address order, but its working set
// grows with the head count: no faster for SmolLM2's 3 KV heads, 1.8x slower for Llama-2-7B's 32.)
// Blocks run over each row's compact key index (RowKeys): the rows of one step share their keys, so a
// window changes which rows a block reads, not how many times.
// q: [T, H, D] (strides q_t, q_h); k, v: this head's rows, `stride` elements apart; out: [T, H * D].
// KV is T (the exact cache) or int8_t (the mirror, whose rows' scales are k_scale and v_scale).
template <typename T, typename KV>
DOTF_ATTN_TARGET void attend_kv_head(const T* q, int64_t q_t, int64_t q_h, const KV* k, const KV* v, int64_t stride,
                                     const float* k_scale, const float* v_scale, int64_t kvh, int64_t G,
                                     int64_t T_rows, int64_t H, int64_t D, int64_t start, int64_t window, float scale,
                                     T* out) {
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
    for (int64_t i = 0; i < rows;) {
      const int64_t g = same_keys_run(seen, i, DOTF_ATTN_SCORE_ROWS);
      int64_t n = 0;  // scores past a row's own keys are computed too, and never used
      for (int64_t r = i; r < i + g; ++r) n = std::max(n, seen[r].n);
      const int64_t j1 = std::min(j0 + kKeyBlock, n);
      float* si = scores.get() + i * padded;
      const float* qi = qf.data() + i * D;
      for (int64_t j = j0; j < j1; j += 4) {
        const int64_t key = seen[i].key(j);
        switch (g) {
#if DOTF_ATTN_SCORE_ROWS >= 4
          case 4: score_keys4<KV, 4>(qi, D, k, stride, key, last_key, si + j, padded); break;
          case 3: score_keys4<KV, 3>(qi, D, k, stride, key, last_key, si + j, padded); break;
#endif
          case 2: score_keys4<KV, 2>(qi, D, k, stride, key, last_key, si + j, padded); break;
          default: score_keys4<KV, 1>(qi, D, k, stride, key, last_key, si + j, padded); break;
        }
      }
      i += g;
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
    inv_sum[i] = 1.0f / simd::softmax_numerators(si, r.n);
    if constexpr (kInt8) scale_by(v_scale);
  }
  for (int64_t j0 = 0; j0 < max_n; j0 += kKeyBlock) {
    for (int64_t i = 0; i < rows;) {
      const int64_t g = same_keys_run(seen, i, DOTF_ATTN_VALUE_ROWS);
      accumulate_block(seen.data() + i, g, j0, scores.get() + i * padded, padded, v, stride, D,
                       acc.data() + i * D);
      i += g;
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
  at::parallel_for(0, KVH, kv_head_grain(start + T_rows, G * T_rows, D, KVH), [&](int64_t begin, int64_t end) {
    for (int64_t kvh = begin; kvh < end; ++kvh) {
      const int64_t sh = kvh * kv.scale_head;
      attend_kv_head(qp, q.stride(0), q.stride(1), kv.k + kvh * kv.head, kv.v + kvh * kv.head, kv.row,
                     kv.k_scale ? kv.k_scale + sh : nullptr, kv.v_scale ? kv.v_scale + sh : nullptr, kvh, G,
                     T_rows, H, D, start, window, scale, op);
    }
  });
}

}  // namespace

// q: [T, H, D]; k_cache, v_cache: [capacity, KVH, D] (last dim contiguous, same strides); out: [T, H * D].
void attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start,
               int64_t window, float scale, at::Tensor& out) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const KvHeads<T> kv{k_cache.const_data_ptr<T>(), v_cache.const_data_ptr<T>(), k_cache.size(1),
                        k_cache.stride(1), k_cache.stride(0)};
    fused_attention<T, T>(q, kv, start, window, scale, out);
  };
  switch (q.scalar_type()) {
    case at::kFloat: run(float{}); break;
    case at::kBFloat16: run(c10::BFloat16{}); break;
    default: run(c10::Half{}); break;
  }
}

// q: [T, H, D]; k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32 (all
// contiguous); out: [T, H * D].
void int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q, const at::Tensor& k_scale,
                    const at::Tensor& v_scale, int64_t start, int64_t window, float scale, at::Tensor& out) {
  const int64_t capacity = k_q.size(1), D = k_q.size(2);
  const KvHeads<int8_t> kv{k_q.const_data_ptr<int8_t>(), v_q.const_data_ptr<int8_t>(), k_q.size(0), capacity * D,
                           D, k_scale.const_data_ptr<float>(), v_scale.const_data_ptr<float>(), capacity};
  switch (q.scalar_type()) {
    case at::kFloat: fused_attention<float, int8_t>(q, kv, start, window, scale, out); break;
    case at::kBFloat16: fused_attention<c10::BFloat16, int8_t>(q, kv, start, window, scale, out); break;
    default: fused_attention<c10::Half, int8_t>(q, kv, start, window, scale, out); break;
  }
}

}  // namespace dotf::avx2::DOTF_ATTN_NS
#endif  // DOTF_ATTN_NS
