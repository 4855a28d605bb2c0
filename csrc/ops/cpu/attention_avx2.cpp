// The fused CPU attention kernel for decode, draft and verify (a few new queries; ops/attention.cpp
// sends prefills elsewhere), over the exact KV cache or over the draft's int8 mirror of it. Keys go in
// tiles of kKeyTile positions shared by every query row of a KV head (all T positions and all G query
// heads of the group), with an online softmax (a running maximum and sum per row, rescaled when the
// maximum grows), so:
//   * K and V are read from memory once per KV head for all its rows, and the per-row scratch (a tile
//     of scores) stays in L1 at any context: a 9-row verify at 8k keys costs about its arithmetic, not
//     9 passes over the cache or a score buffer that spills to L3;
//   * a row's result depends on its own keys only, through the same operations in the same order
//     whatever T, the other rows or the thread count (tiles start at absolute key positions): a verify
//     row is bitwise the row a decoding step computes (batch invariance, which fp32 speculation relies
//     on to equal plain decoding token for token);
//   * keys past a row's position never reach its result (no max, no weight, no value read for them;
//     a pair of rows may score a key only the later row sees, and never uses it), and rows past the
//     last new position are never read: a non-finite value cached for a rejected draft cannot leak;
//   * it reads K and V near memory speed instead of paying ATen's per-op overheads, which dominate
//     these small shapes (measured in bench/README.md).
// The int8 mirror (cache/kv_cache.h) holds each row as int8 values times one float scale per
// (position, KV head). A tile of it is widened to fp32 in an L1 buffer (exact: int8 -> float), scored
// and accumulated by the same code as the exact cache; the key scale multiplies the scores, the value
// scale the softmax weights.
#include "ops/cpu/attention_avx2.h"

#include "ops/cpu/simd.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
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

// Keys per tile: a tile's K (or V) rows stay in L1 while every row of the head uses them, and its
// scores (rows x kKeyTile floats) too. A multiple of 8.
constexpr int64_t kKeyTile = 64;

// The lane sums of four vectors, [sum(a0), sum(a1), sum(a2), sum(a3)], each added in the order
// ((0+1)+(2+3))+((4+5)+(6+7)) whichever slot it sits in, so a score never depends on its neighbours.
DOTF_AVX2 inline __m128 hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// scores[r * ld + j] = <q_r, k_{s+j}> for R query rows (D apart in q) and the four keys s..s+3 of a
// tile (rows `stride` apart from k), each summed over D = 8n lanes in one fixed order (chunk 0, 1, ...
// then hsum4x8). Keys past `last` are read as `last` (their scores are never used), so a tile is never
// read past its end. Four keys per pass amortize the lane reduction; two rows share each key load.
template <typename T, int R>
DOTF_AVX2 inline void score_keys4(const float* q, int64_t D, const T* k, int64_t stride, int64_t s, int64_t last,
                                  float* scores, int64_t ld) {
  const T* k0 = k + std::min(s, last) * stride;
  const T* k1 = k + std::min(s + 1, last) * stride;
  const T* k2 = k + std::min(s + 2, last) * stride;
  const T* k3 = k + std::min(s + 3, last) * stride;
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
  if constexpr (R > 1) _mm_storeu_ps(scores + ld + s, hsum4x8(a10, a11, a12, a13));
}

// acc[0 .. 8C) += sum over s in [0, n) of weights[s] * v[s * stride + 0 .. 8C), s ascending.
template <typename T, int C>
DOTF_AVX2 void accumulate_values(const float* weights, const T* v, int64_t stride, int64_t n, float* acc) {
  __m256 a[C];
  for (int c = 0; c < C; ++c) a[c] = _mm256_loadu_ps(acc + 8 * c);
  for (int64_t s = 0; s < n; ++s) {
    const __m256 w = _mm256_broadcast_ss(weights + s);
    const T* vs = v + s * stride;
    for (int c = 0; c < C; ++c) a[c] = _mm256_fmadd_ps(w, load8(vs + 8 * c), a[c]);
  }
  for (int c = 0; c < C; ++c) _mm256_storeu_ps(acc + 8 * c, a[c]);
}

template <typename T>
DOTF_AVX2 void accumulate_row(const float* weights, const T* v, int64_t stride, int64_t n, int64_t D, float* acc) {
  // Up to 8 chunks (64 lanes) per sweep keeps the accumulators in registers.
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    const T* vd = v + d0;
    float* ad = acc + d0;
    switch (std::min<int64_t>(8, (D - d0) / 8)) {
      case 8: accumulate_values<T, 8>(weights, vd, stride, n, ad); break;
      case 7: accumulate_values<T, 7>(weights, vd, stride, n, ad); break;
      case 6: accumulate_values<T, 6>(weights, vd, stride, n, ad); break;
      case 5: accumulate_values<T, 5>(weights, vd, stride, n, ad); break;
      case 4: accumulate_values<T, 4>(weights, vd, stride, n, ad); break;
      case 3: accumulate_values<T, 3>(weights, vd, stride, n, ad); break;
      case 2: accumulate_values<T, 2>(weights, vd, stride, n, ad); break;
      default: accumulate_values<T, 1>(weights, vd, stride, n, ad); break;
    }
  }
}

// x[0, n) *= scale[0, n) (n a multiple of 8; the tile's padding lanes multiply padding).
DOTF_AVX2 inline void scale_in_place(float* x, const float* scale, int64_t n) {
  for (int64_t s = 0; s < n; s += 8)
    _mm256_storeu_ps(x + s, _mm256_mul_ps(_mm256_loadu_ps(x + s), _mm256_loadu_ps(scale + s)));
}

// One KV head's rows of the exact cache, read in place: K and V of position s at k + s * stride.
template <typename T>
struct CacheRows {
  using Elem = T;
  static constexpr bool kScaled = false;
  const T* k;
  const T* v;
  int64_t stride;
  // Rows [s0, s1) of K (or V): the first row and the distance between rows.
  std::pair<const T*, int64_t> keys(int64_t s0, int64_t, float*) const { return {k + s0 * stride, stride}; }
  std::pair<const T*, int64_t> values(int64_t s0, int64_t, float*) const { return {v + s0 * stride, stride}; }
  void key_scales(int64_t, int64_t, float*) const {}
  void value_scales(int64_t, int64_t, float*) const {}
};

// One KV head's rows of the int8 mirror: position s's D int8 values at k + s * D (a head's rows are
// contiguous), its scale at k_scale[s]. A tile is widened to fp32 into the caller's L1 buffer.
struct Int8Rows {
  using Elem = float;
  static constexpr bool kScaled = true;
  const int8_t* k;
  const int8_t* v;
  const float* k_scale;
  const float* v_scale;
  int64_t D;

  DOTF_AVX2 static void widen(const int8_t* src, int64_t rows, int64_t D, float* dst) {
    for (int64_t i = 0; i < rows * D; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                    _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)))));
  }
  DOTF_AVX2 std::pair<const float*, int64_t> keys(int64_t s0, int64_t s1, float* buf) const {
    widen(k + s0 * D, s1 - s0, D, buf);
    return {buf, D};
  }
  DOTF_AVX2 std::pair<const float*, int64_t> values(int64_t s0, int64_t s1, float* buf) const {
    widen(v + s0 * D, s1 - s0, D, buf);
    return {buf, D};
  }
  // dst[0, kKeyTile) = the scales of rows [s0, s1), padded with 0.
  void key_scales(int64_t s0, int64_t s1, float* dst) const { copy_scales(k_scale, s0, s1, dst); }
  void value_scales(int64_t s0, int64_t s1, float* dst) const { copy_scales(v_scale, s0, s1, dst); }
  static void copy_scales(const float* scale, int64_t s0, int64_t s1, float* dst) {
    std::copy(scale + s0, scale + s1, dst);
    std::fill(dst + (s1 - s0), dst + kKeyTile, 0.0f);
  }
};

// All G*T query rows of one KV head, over its rows (CacheRows or Int8Rows).
// q: [T, H, D] (strides q_t, q_h); out: [T, H * D].
template <typename T, typename Rows>
DOTF_AVX2 void attend_kv_head(const T* q, int64_t q_t, int64_t q_h, const Rows& kv, int64_t kvh, int64_t G,
                              int64_t T_rows, int64_t H, int64_t D, int64_t start, float scale, T* out) {
  using E = typename Rows::Elem;
  const int64_t rows = G * T_rows, max_keys = start + T_rows;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> qf(rows * D), scores(rows * kKeyTile), acc(rows * D, 0.0f);
  std::vector<float> row_max(rows, kNegInf), row_sum(rows, 0.0f);
  std::vector<float> tile_buf(Rows::kScaled ? kKeyTile * D : 0), tile_scale(Rows::kScaled ? kKeyTile : 0);
  // Row i is query head kvh * G + i / T_rows at position start + i % T_rows; it sees keys [0, keys(i)).
  auto keys = [&](int64_t i) { return start + i % T_rows + 1; };
  for (int64_t i = 0; i < rows; ++i) {
    const T* qi = q + (i % T_rows) * q_t + (kvh * G + i / T_rows) * q_h;
    for (int64_t d = 0; d < D; ++d) qf[i * D + d] = static_cast<float>(qi[d]) * scale;
  }
  for (int64_t s0 = 0; s0 < max_keys; s0 += kKeyTile) {
    const int64_t s1 = std::min(s0 + kKeyTile, max_keys);
    // Scores of the tile: row i's at scores[i * kKeyTile + s - s0].
    {
      const auto [k, stride] = kv.keys(s0, s1, tile_buf.data());
      for (int64_t i = 0; i < rows; i += 2) {  // two rows share each key load
        const bool pair = i + 1 < rows;
        const int64_t n = std::min(s1, pair ? std::max(keys(i), keys(i + 1)) : keys(i)) - s0;
        float* si = scores.data() + i * kKeyTile;
        for (int64_t s = 0; s < n; s += 4) {
          if (pair)
            score_keys4<E, 2>(qf.data() + i * D, D, k, stride, s, s1 - s0 - 1, si, kKeyTile);
          else
            score_keys4<E, 1>(qf.data() + i * D, D, k, stride, s, s1 - s0 - 1, si, kKeyTile);
        }
      }
    }
    if constexpr (Rows::kScaled) kv.key_scales(s0, s1, tile_scale.data());
    // Online softmax: fold the tile into each row's running maximum, sum and accumulator.
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t n = std::min(s1, keys(i)) - s0;
      if (n <= 0) continue;
      float* si = scores.data() + i * kKeyTile;
      const int64_t padded = (n + 7) / 8 * 8;
      if constexpr (Rows::kScaled) scale_in_place(si, tile_scale.data(), padded);
      std::fill(si + n, si + padded, kNegInf);  // exp -> exactly 0
      const float tile_max = simd::max_of(si, n);  // skips a NaN score, which propagates through exp
      const float new_max = std::max(row_max[i], tile_max);
      if (new_max > row_max[i]) {  // rescale what the earlier tiles added (0 before the first)
        const float shrink = row_max[i] == kNegInf ? 0.0f : std::exp(row_max[i] - new_max);
        row_sum[i] *= shrink;
        for (int64_t d = 0; d < D; ++d) acc[i * D + d] *= shrink;
        row_max[i] = new_max;
      }
      const __m256 shift = _mm256_set1_ps(new_max);
      __m256 sum = _mm256_setzero_ps();
      for (int64_t s = 0; s < padded; s += 8) {
        const __m256 e = simd::exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(si + s), shift));
        _mm256_storeu_ps(si + s, e);
        sum = _mm256_add_ps(sum, e);
      }
      row_sum[i] += simd::hsum8(sum);
    }
    // Values: weights are the tile's softmax numerators (times the value scales for int8 rows).
    if constexpr (Rows::kScaled) kv.value_scales(s0, s1, tile_scale.data());
    const auto [v, stride] = kv.values(s0, s1, tile_buf.data());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t n = std::min(s1, keys(i)) - s0;
      if (n <= 0) continue;
      float* wi = scores.data() + i * kKeyTile;
      if constexpr (Rows::kScaled) scale_in_place(wi, tile_scale.data(), (n + 7) / 8 * 8);
      accumulate_row(wi, v, stride, n, D, acc.data() + i * D);
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    T* oi = out + (i % T_rows) * H * D + (kvh * G + i / T_rows) * D;
    const float inv_sum = 1.0f / row_sum[i];
    for (int64_t d = 0; d < D; ++d) oi[d] = static_cast<T>(acc[i * D + d] * inv_sum);
  }
}

// One task per KV head: each is independent and computes the same numbers on any thread.
// rows_of(kvh) gives the head's Rows.
template <typename T, typename RowsOf>
void for_each_kv_head(const at::Tensor& q, int64_t KVH, int64_t start, float scale, at::Tensor& out,
                      const RowsOf& rows_of) {
  const int64_t T_rows = q.size(0), H = q.size(1), D = q.size(2), G = H / KVH;
  const T* qp = q.const_data_ptr<T>();
  T* op = out.mutable_data_ptr<T>();
  const int64_t grain = (start + T_rows) * G * T_rows * D < 65536 ? KVH : 1;
  at::parallel_for(0, KVH, grain, [&](int64_t begin, int64_t end) {
    for (int64_t kvh = begin; kvh < end; ++kvh)
      attend_kv_head(qp, q.stride(0), q.stride(1), rows_of(kvh), kvh, G, T_rows, H, D, start, scale, op);
  });
}

// q: [T, H, D]; k_cache, v_cache: [capacity, KVH, D] (last dim contiguous, same strides); out: [T, H * D].
template <typename T>
void fused_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start,
                     float scale, at::Tensor& out) {
  const T* kp = k_cache.const_data_ptr<T>();
  const T* vp = v_cache.const_data_ptr<T>();
  const int64_t head = k_cache.stride(1), row = k_cache.stride(0);
  for_each_kv_head<T>(q, k_cache.size(1), start, scale, out,
                      [&](int64_t kvh) { return CacheRows<T>{kp + kvh * head, vp + kvh * head, row}; });
}

// q: [T, H, D]; k_q, v_q: [KVH, capacity, D] int8 contiguous; k_scale, v_scale: [KVH, capacity] float32
// contiguous; out: [T, H * D].
template <typename T>
void fused_int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                          const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start, float scale,
                          at::Tensor& out) {
  const int64_t capacity = k_q.size(1), D = k_q.size(2);
  const int8_t* kp = k_q.const_data_ptr<int8_t>();
  const int8_t* vp = v_q.const_data_ptr<int8_t>();
  const float* ksp = k_scale.const_data_ptr<float>();
  const float* vsp = v_scale.const_data_ptr<float>();
  for_each_kv_head<T>(q, k_q.size(0), start, scale, out, [&](int64_t kvh) {
    return Int8Rows{kp + kvh * capacity * D, vp + kvh * capacity * D, ksp + kvh * capacity, vsp + kvh * capacity, D};
  });
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
