#pragma once
// AVX2 building blocks shared by dotf's hand-written CPU kernels (linear, attention, sampling). Each
// function carries DOTF_AVX2 (ops/cpu/features.h): callers check cpu_has_avx2_fma() first.
#include "ops/cpu/features.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#ifdef DOTF_HAVE_AVX2_KERNEL
#include <immintrin.h>
#endif

namespace dotf {

#ifdef DOTF_HAVE_AVX2_KERNEL
namespace simd {

// 8 consecutive elements widened to fp32.
DOTF_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
DOTF_AVX2 inline __m256 load8(const uint16_t* bf16) {  // bf16 is the top half of an fp32
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bf16))), 16));
}
DOTF_AVX2 inline __m256 load8(const c10::BFloat16* p) { return load8(reinterpret_cast<const uint16_t*>(p)); }
DOTF_AVX2 inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Makes the compiler hold each vector in a register (an empty asm that "changes" them): a value used by
// several FMAs is then loaded once instead of being folded into each as a memory operand, which costs
// a load per use and makes a kernel load-bound.
// ("v": any vector register the target has, all 32 in an AVX512VL build.)
DOTF_AVX2 inline void keep_in_register(__m256& v) { asm("" : "+v"(v)); }
template <typename... V>
DOTF_AVX2 inline void keep_in_register(__m256& v, V&... rest) {
  keep_in_register(v);
  keep_in_register(rest...);
}

// The largest of x[0, n) (-inf when n == 0); exact in any order. A NaN element is skipped, as
// std::max(best, NaN) skips it (max_ps returns its second operand when either is NaN).
DOTF_AVX2 inline float max_of(const float* x, int64_t n) {
  __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) vmax = _mm256_max_ps(_mm256_loadu_ps(x + t), vmax);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float best = lanes[0];
  for (int i = 1; i < 8; ++i) best = best < lanes[i] ? lanes[i] : best;
  for (; t < n; ++t) best = best < x[t] ? x[t] : best;
  return best;
}

// Sum of the 8 lanes in one fixed order ((0+4)+(2+6))+((1+5)+(3+7)), so equal inputs give equal sums.
DOTF_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for x <= 0 (softmax after subtracting the row maximum), Cephes' single-precision
// polynomial (relative error ~2 ulp); x below -87.3 (including -inf) gives exactly 0 and NaN stays NaN.
DOTF_AVX2 inline __m256 exp8_nonpositive(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  // max(lo, x) with x second keeps a NaN x (the second operand is returned when either is NaN).
  __m256 t = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(t, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  t = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), t);
  t = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), t);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(t, t), _mm256_add_ps(t, _mm256_set1_ps(1.0f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
  return _mm256_andnot_ps(underflow, y);
}

// scores[s] <- exp(scores[s] - max) for s < keys (max over those keys); returns their sum.
// scores has room for keys rounded up to 8.
DOTF_AVX2 inline float softmax_numerators(float* scores, int64_t keys) {
  const float max_score = max_of(scores, keys);  // skips a NaN score, which propagates through exp
  const int64_t padded = (keys + 7) / 8 * 8;
  std::fill(scores + keys, scores + padded, -std::numeric_limits<float>::infinity());  // exp -> exactly 0
  const __m256 shift = _mm256_set1_ps(max_score);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t s = 0; s < padded; s += 8) {
    const __m256 e = exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + s), shift));
    _mm256_storeu_ps(scores + s, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum8(sum);
}

}  // namespace simd
#endif

}  // namespace dotf
