#pragma once
// The building blocks of the int8 mirror's integer attention kernel (design: attention_int8_vnni.cpp, the
// only file that includes this): the transposed-key score micro-kernel, the interleaved-value micro-kernel,
// the draft's softmax and the quantization of its weights, all for AVX-512 VNNI on 256-bit vectors.
#include "ops/cpu/features.h"
#include "ops/cpu/simd.h"

#ifdef DOTF_HAVE_AVX2_KERNEL
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace dotf::avx2::attention_int8_vnni_build {

constexpr int64_t kBlock = 64;     // keys per block: its transposed K and interleaved V stay in L1
constexpr int kScoreRows = 4;      // query rows per transposed key load (4 rows x 32 keys of accumulators)
constexpr int kValueRows = 2;      // rows per interleaved value load (2 rows x 64 dims of accumulators)

DOTF_AVX512_VNNI inline __m256i load32(const int8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Eight keys' rows (D int8 each) transposed so that the lanes are the keys: out[t] holds, in lane l, key
// l's dims 4t..4t+3 as unsigned bytes (k + 128, a sign-bit flip: vpdpbusd's first operand is unsigned).
// One vpdpbusd of out[t] with a query's dims 4t..4t+3 broadcast then adds them into eight keys' scores,
// so the scores need no lane reduction.
DOTF_AVX512_VNNI inline void transpose_keys8(const int8_t* const* rows, int64_t D, __m256i* out) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t c = 0; c < D / 32; ++c) {  // an 8 x 8 transpose of 32-bit elements per 32 dims
    __m256i r[8];
    for (int l = 0; l < 8; ++l) r[l] = _mm256_xor_si256(load32(rows[l] + 32 * c), flip);
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    __m256i* o = out + 8 * c;  // quads 8c .. 8c + 7
    _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u0, u4, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u1, u5, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u2, u6, 0x20));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u3, u7, 0x20));
    _mm256_storeu_si256(o + 4, _mm256_permute2x128_si256(u0, u4, 0x31));
    _mm256_storeu_si256(o + 5, _mm256_permute2x128_si256(u1, u5, 0x31));
    _mm256_storeu_si256(o + 6, _mm256_permute2x128_si256(u2, u6, 0x31));
    _mm256_storeu_si256(o + 7, _mm256_permute2x128_si256(u3, u7, 0x31));
  }
}

// Scores of R quantized query rows against 32 keys (four transposed groups of eight, kt[g * D / 4 + t]):
// out[r][0, 32) = (integer dot product - offset[r]) * row_scale[r] * key_scale[0, 32). The R rows share
// each transposed key load; the query's four bytes broadcast from memory.
template <int R>
DOTF_AVX512_VNNI inline void score_keys32(const int8_t* const* q, int64_t D, const __m256i* kt, const float* row_scale,
                                          const int32_t* offset, const float* key_scale, float* const* out) {
  static_assert(R >= 1 && R <= kScoreRows, "up to 4 rows per key load");
  const __m256i z = _mm256_setzero_si256();
  const int64_t quads = D / 4;
#define DOTF_ROW_ACC(r) __m256i a##r##0 = z, a##r##1 = z, a##r##2 = z, a##r##3 = z;
  DOTF_ROW_ACC(0) DOTF_ROW_ACC(1) DOTF_ROW_ACC(2) DOTF_ROW_ACC(3)
#undef DOTF_ROW_ACC
  for (int64_t t = 0; t < quads; ++t) {
    const __m256i k0 = _mm256_loadu_si256(kt + t), k1 = _mm256_loadu_si256(kt + quads + t);
    const __m256i k2 = _mm256_loadu_si256(kt + 2 * quads + t), k3 = _mm256_loadu_si256(kt + 3 * quads + t);
#define DOTF_ROW_DOT(r)                                  \
  if constexpr (R > r) {                                 \
    int32_t quad;                                        \
    std::memcpy(&quad, q[r] + 4 * t, 4);                 \
    const __m256i b = _mm256_set1_epi32(quad);           \
    a##r##0 = _mm256_dpbusd_epi32(a##r##0, k0, b);       \
    a##r##1 = _mm256_dpbusd_epi32(a##r##1, k1, b);       \
    a##r##2 = _mm256_dpbusd_epi32(a##r##2, k2, b);       \
    a##r##3 = _mm256_dpbusd_epi32(a##r##3, k3, b);       \
  }
    DOTF_ROW_DOT(0) DOTF_ROW_DOT(1) DOTF_ROW_DOT(2) DOTF_ROW_DOT(3)
#undef DOTF_ROW_DOT
  }
#define DOTF_GROUP_OUT(r, g)                                                                          \
  _mm256_storeu_ps(out[r] + 8 * g,                                                                    \
                   _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(a##r##g, off)),                  \
                                 _mm256_mul_ps(rs, _mm256_loadu_ps(key_scale + 8 * g))));
#define DOTF_ROW_OUT(r)                                                                               \
  if constexpr (R > r) {                                                                              \
    const __m256i off = _mm256_set1_epi32(offset[r]);                                                 \
    const __m256 rs = _mm256_set1_ps(row_scale[r]);                                                   \
    DOTF_GROUP_OUT(r, 0) DOTF_GROUP_OUT(r, 1) DOTF_GROUP_OUT(r, 2) DOTF_GROUP_OUT(r, 3)               \
  }
  DOTF_ROW_OUT(0) DOTF_ROW_OUT(1) DOTF_ROW_OUT(2) DOTF_ROW_OUT(3)
#undef DOTF_ROW_OUT
#undef DOTF_GROUP_OUT
}

// Four keys' value rows (D int8 each) interleaved for vpdpbusd: per 32 dims, four vectors whose 32-bit
// lanes hold the four keys' bytes of one dim. Vector p of dims [32c, 32c + 32) holds dims 32c + 4p + l in
// lanes l = 0..3 and 32c + 16 + 4p + l - 4 in lanes 4..7 (the unpacks work within 128-bit halves);
// output_dim() undoes this order.
DOTF_AVX512_VNNI inline void interleave_keys4(const int8_t* r0, const int8_t* r1, const int8_t* r2, const int8_t* r3,
                                              int64_t D, __m256i* out) {
  for (int64_t c = 0; c < D / 32; ++c) {
    const __m256i a = load32(r0 + 32 * c), b = load32(r1 + 32 * c), x = load32(r2 + 32 * c), y = load32(r3 + 32 * c);
    const __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
    const __m256i xy_lo = _mm256_unpacklo_epi8(x, y), xy_hi = _mm256_unpackhi_epi8(x, y);
    _mm256_storeu_si256(out + 4 * c + 0, _mm256_unpacklo_epi16(ab_lo, xy_lo));
    _mm256_storeu_si256(out + 4 * c + 1, _mm256_unpackhi_epi16(ab_lo, xy_lo));
    _mm256_storeu_si256(out + 4 * c + 2, _mm256_unpacklo_epi16(ab_hi, xy_hi));
    _mm256_storeu_si256(out + 4 * c + 3, _mm256_unpackhi_epi16(ab_hi, xy_hi));
  }
}

// The dim that lane `slot` of the value accumulators (interleaved order, 8 lanes per vector) holds.
inline int64_t output_dim(int64_t slot) {
  const int64_t c = slot / 32, p = slot / 8 % 4, l = slot % 8;
  return 32 * c + 4 * p + (l < 4 ? l : 12 + l);
}

// A row's weights over one block (kBlock floats, zero past its keys) -> uint8 with one scale (max / 255);
// returns the scale, 0 when every weight is 0.
DOTF_AVX512_VNNI inline float quantize_weights(const float* w, uint8_t* out) {
  const float wmax = simd::max_of(w, kBlock);
  if (!(wmax > 0.0f)) return 0.0f;
  const __m256 inv = _mm256_set1_ps(255.0f / wmax);
  for (int64_t s = 0; s < kBlock; s += 8) {
    const __m256i x = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w + s), inv));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + s), _mm256_mask_cvtusepi32_epi8(_mm_setzero_si128(), 0xff, x));
  }
  return wmax / 255.0f;
}

// For R rows and chunks [c0, c0 + C) of 32 dims: acc[r] (interleaved order) += block_scale[r] * the
// integer sums over `groups` interleaved four-key groups of w[r] times the values.
template <int R, int C>
DOTF_AVX512_VNNI void accumulate_values(const uint8_t* const* w, const __m256i* vt, int64_t chunks, int64_t c0,
                                        int64_t groups, const float* block_scale, float* const* acc) {
  static_assert(R >= 1 && R <= kValueRows && C >= 1 && C <= 2, "2 rows of 64 dims");
  const __m256i z = _mm256_setzero_si256();
// OP(r, c, p) for every accumulator: 2 rows x 2 chunks x 4 vectors (named, so they stay in registers).
#define DOTF_EACH_CP(OP, r) OP(r, 0, 0) OP(r, 0, 1) OP(r, 0, 2) OP(r, 0, 3) OP(r, 1, 0) OP(r, 1, 1) OP(r, 1, 2) OP(r, 1, 3)
#define DOTF_EACH_ACC(OP) DOTF_EACH_CP(OP, 0) DOTF_EACH_CP(OP, 1)
#define DOTF_ZERO_ACC(r, c, p) __m256i a##r##c##p = z;
  DOTF_EACH_ACC(DOTF_ZERO_ACC)
#undef DOTF_ZERO_ACC
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i* vg = vt + (g * chunks + c0) * 4;
    int32_t w0, w1 = 0;
    std::memcpy(&w0, w[0] + 4 * g, 4);
    if constexpr (R > 1) std::memcpy(&w1, w[1] + 4 * g, 4);
    const __m256i b0 = _mm256_set1_epi32(w0), b1 = _mm256_set1_epi32(w1);
#define DOTF_DOT(r, c, p)                                                                  \
  if constexpr (R > r && C > c) a##r##c##p = _mm256_dpbusd_epi32(a##r##c##p, b##r, _mm256_loadu_si256(vg + 4 * c + p));
    DOTF_EACH_ACC(DOTF_DOT)
#undef DOTF_DOT
  }
#define DOTF_STORE_ACC(r, c, p)                                                                \
  if constexpr (R > r && C > c) {                                                              \
    float* f = acc[r] + ((c0 + c) * 4 + p) * 8;                                                \
    _mm256_storeu_ps(f, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r##c##p), _mm256_set1_ps(block_scale[r]), \
                                        _mm256_loadu_ps(f)));                                  \
  }
  DOTF_EACH_ACC(DOTF_STORE_ACC)
#undef DOTF_STORE_ACC
#undef DOTF_EACH_ACC
#undef DOTF_EACH_CP
}

// accumulate_values over all D dims, 64 per sweep.
template <int R>
DOTF_AVX512_VNNI void accumulate_rows(const uint8_t* const* w, const __m256i* vt, int64_t chunks, int64_t groups,
                                      const float* block_scale, float* const* acc) {
  for (int64_t c0 = 0; c0 < chunks; c0 += 2) {
    if (chunks - c0 >= 2)
      accumulate_values<R, 2>(w, vt, chunks, c0, groups, block_scale, acc);
    else
      accumulate_values<R, 1>(w, vt, chunks, c0, groups, block_scale, acc);
  }
}

// exp(x) for x <= 0, to about 4e-5 relative (the draft's weights are rounded to 1/255 of their block's
// largest anyway): 2^n times a degree-4 polynomial in the fraction, half the float kernel's work. A NaN x
// stays NaN; x below -87 gives about 1e-38.
DOTF_AVX512_VNNI inline __m256 exp8_draft(__m256 x) {
  // max(lo, x) with x second keeps a NaN x (the second operand is returned when either is NaN).
  const __m256 t = _mm256_mul_ps(_mm256_max_ps(_mm256_set1_ps(-87.0f), x), _mm256_set1_ps(1.44269504088896341f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);  // in [-0.5, 0.5]: 2^f by its Taylor series, 4e-5 at the ends
  __m256 p = _mm256_set1_ps(9.6181291e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504109e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022651e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

// One row's softmax numerators over its n scores, times the values' scales (value_scale, compact order),
// in place; zero from n to `padded`. Returns the numerators' sum, or NaN when a score, a numerator or a
// weight is not finite (the row is then bad).
DOTF_AVX512_VNNI inline float softmax_weights(float* scores, int64_t n, int64_t padded, const float* value_scale) {
  const float max_score = simd::max_of(scores, n);  // skips a NaN score, which propagates through exp
  const __m256 shift = _mm256_set1_ps(max_score);
  __m256 sum = _mm256_setzero_ps(), weighted = _mm256_setzero_ps();
  for (int64_t s = 0; s < n; s += 8) {
    // Past n: exp(-inf) is ~0 and the scale is whatever the padding holds, so mask those lanes to 0.
    const __m256 e = exp8_draft(_mm256_sub_ps(_mm256_loadu_ps(scores + s), shift));
    const __m256 keep = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n - s)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 w = _mm256_and_ps(keep, _mm256_mul_ps(e, _mm256_loadu_ps(value_scale + s)));
    _mm256_storeu_ps(scores + s, w);
    sum = _mm256_add_ps(sum, _mm256_and_ps(keep, e));
    weighted = _mm256_add_ps(weighted, w);
  }
  std::fill(scores + (n + 7) / 8 * 8, scores + padded, 0.0f);
  const float total = simd::hsum8(sum);
  return std::isfinite(simd::hsum8(weighted)) ? total : std::numeric_limits<float>::quiet_NaN();
}

}  // namespace dotf::avx2::attention_int8_vnni_build
#endif  // DOTF_HAVE_AVX2_KERNEL
