// The Int8Avx2 kernel's body (design: linear_avx2_int8.cpp), compiled once per instruction set: by
// linear_avx2_int8.cpp for AVX2 and by linear_avx512_int8.cpp for AVX-512 VNNI. No include guard: each
// includer defines, before including it,
//   DOTF_INT8_NS          the namespace its copy lives in (a distinct one per file: no ODR clash)
//   DOTF_INT8_TARGET      the function attribute (target) its code is compiled for
//   DOTF_INT8_ROWS        rows of x per micro-kernel call (two accumulators each; AVX2 has 16 vector
//                         registers, AVX-512VL 32)
//   DOTF_INT8_MADD(a,w,x) a + (the int16 pair products w * x summed in pairs) as 8 int32 lanes
// Integer sums are exact and the fp32 flushes happen at the same k for every row and every row
// block size, so every copy computes the same bits (tests/cpp/ops/test_linear.cpp checks it).
#include "ops/cpu/linear_avx2_layout.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace dotf::avx2::DOTF_INT8_NS {

// c[MB][16] (row stride ldc, fp32) += sum over the 4 segments s and pair steps k < kc of
//   x[s * xseg + k * ldx + i] (an int16 pair) . (the 32 weight bytes at p + (s * q2 + k) * 32);
// with Prefetch, also prefetches p + ahead along each segment into L2.
template <int MB, bool Prefetch>
DOTF_INT8_TARGET inline void int8_micro(const int8_t* __restrict p, int64_t q2, int64_t kc,
                                        const int32_t* __restrict x, int64_t ldx, int64_t xseg, float* __restrict c,
                                        int64_t ldc, int64_t ahead) {
  static_assert(MB >= 1 && MB <= 12, "up to 12 rows (24 named accumulators)");
  const __m256i z = _mm256_setzero_si256();
  // Named registers, not arrays (GCC stores arrays of vectors to the stack on every iteration).
  __m256i a0_0 = z, a0_1 = z, a1_0 = z, a1_1 = z, a2_0 = z, a2_1 = z, a3_0 = z, a3_1 = z, a4_0 = z, a4_1 = z,
          a5_0 = z, a5_1 = z, a6_0 = z, a6_1 = z, a7_0 = z, a7_1 = z, a8_0 = z, a8_1 = z, a9_0 = z, a9_1 = z,
          a10_0 = z, a10_1 = z, a11_0 = z, a11_1 = z;
#define DOTF_MADD(i)                                                             \
  if constexpr (MB > i) {                                                        \
    const __m256i xv = _mm256_set1_epi32(xk[i]);                                 \
    a##i##_0 = DOTF_INT8_MADD(a##i##_0, w0, xv);                                 \
    a##i##_1 = DOTF_INT8_MADD(a##i##_1, w1, xv);                                 \
  }
#define DOTF_STEP(s)                                                             \
  {                                                                              \
    const int8_t* ps = p + ((s) * q2 + k) * 2 * kPanel;                         \
    const __m256i w0 = _mm256_srai_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ps - 1)), 8); \
    const __m256i w1 = _mm256_srai_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ps)), 8); \
    const int32_t* xk = x + (s) * xseg + k * ldx;                                \
    DOTF_MADD(0) DOTF_MADD(1) DOTF_MADD(2) DOTF_MADD(3) DOTF_MADD(4) DOTF_MADD(5) \
    DOTF_MADD(6) DOTF_MADD(7) DOTF_MADD(8) DOTF_MADD(9) DOTF_MADD(10) DOTF_MADD(11) \
    if constexpr (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(ps + ahead), _MM_HINT_T1); \
  }
  for (int64_t k = 0; k < kc; ++k) {
    DOTF_STEP(0) DOTF_STEP(1) DOTF_STEP(2) DOTF_STEP(3)
  }
#define DOTF_FLUSH(i)                                                                                       \
  if constexpr (MB > i) {                                                                                   \
    _mm256_storeu_ps(c + i * ldc, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc), _mm256_cvtepi32_ps(a##i##_0))); \
    _mm256_storeu_ps(c + i * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + 8), _mm256_cvtepi32_ps(a##i##_1))); \
  }
  DOTF_FLUSH(0) DOTF_FLUSH(1) DOTF_FLUSH(2) DOTF_FLUSH(3) DOTF_FLUSH(4) DOTF_FLUSH(5)
  DOTF_FLUSH(6) DOTF_FLUSH(7) DOTF_FLUSH(8) DOTF_FLUSH(9) DOTF_FLUSH(10) DOTF_FLUSH(11)
#undef DOTF_MADD
#undef DOTF_STEP
#undef DOTF_FLUSH
}

// The first row block of a panel also prefetches the next panel (ahead bytes further) into L2: the
// four streams of a panel are short for int8 (K/4 bytes per column), too short for the hardware
// prefetcher to ramp up on (SmolLM2's layers ran 1.3-1.9x faster with it, one run on a shared VM).
// Into L2, not L1: at M = 1 SmolLM2's LM head took 2.07 ms with T0 and 0.99 ms with T1, its MLP
// up-projection 138 and 71 us (bench/results/linear-prefetch).
template <bool Prefetch>
DOTF_INT8_TARGET void int8_micro_rows(int64_t mb, const int8_t* p, int64_t q2, int64_t kc, const int32_t* x,
                                      int64_t ldx, int64_t xseg, float* c, int64_t ldc, int64_t ahead) {
  switch (mb) {
#define DOTF_ROWS_CASE(n) \
  case n: if constexpr (n <= DOTF_INT8_ROWS) return int8_micro<n, Prefetch>(p, q2, kc, x, ldx, xseg, c, ldc, ahead); break;
    DOTF_ROWS_CASE(12) DOTF_ROWS_CASE(11) DOTF_ROWS_CASE(10) DOTF_ROWS_CASE(9) DOTF_ROWS_CASE(8)
    DOTF_ROWS_CASE(7) DOTF_ROWS_CASE(6) DOTF_ROWS_CASE(5) DOTF_ROWS_CASE(4) DOTF_ROWS_CASE(3) DOTF_ROWS_CASE(2)
#undef DOTF_ROWS_CASE
    default: break;
  }
  return int8_micro<1, Prefetch>(p, q2, kc, x, ldx, xseg, c, ldc, ahead);
}

// Panels [p_begin, p_end) of y = sx[m] * (xq qw^T)[m, n] * sw[n] + bias[n]. xs: int16 pairs of x as
// [4][q2][M]; packed: [P][4 q2][32] int8; sw: [P * 16]; sx: [M]; y: [M, ldy] fp32 with ldy >= P * 16.
DOTF_INT8_TARGET void int8_linear_panels(const int32_t* xs, const float* sx, int64_t M, int64_t q2, int64_t xseg,
                                         const int8_t* packed, const float* sw, const float* bias, int64_t N, float* y,
                                         int64_t ldy, int64_t p_begin, int64_t p_end) {
  const int64_t panel_bytes = kSegments * q2 * 2 * kPanel;
  for (int64_t pi = p_begin; pi < p_end; ++pi) {
    const int64_t n0 = pi * kPanel;
    float* c = y + n0;
    for (int64_t m = 0; m < M; ++m) std::memset(c + m * ldy, 0, kPanel * sizeof(float));
    const int8_t* panel = packed + pi * panel_bytes;
    for (int64_t k0 = 0; k0 < q2; k0 += kInt8Chunk) {
      const int64_t kc = std::min(kInt8Chunk, q2 - k0);
      for (int64_t m0 = 0; m0 < M; m0 += DOTF_INT8_ROWS) {
        const bool prefetch = m0 == 0 && pi + 1 < p_end;
        (prefetch ? int8_micro_rows<true> : int8_micro_rows<false>)(
            std::min<int64_t>(DOTF_INT8_ROWS, M - m0), panel + k0 * 2 * kPanel, q2, kc, xs + k0 * M + m0, M, xseg,
            c + m0 * ldy, ldy, panel_bytes);
      }
    }
    const __m256 s0 = _mm256_loadu_ps(sw + n0), s1 = _mm256_loadu_ps(sw + n0 + 8);
    alignas(32) float b[kPanel] = {};
    if (bias) std::memcpy(b, bias + n0, std::min(kPanel, N - n0) * sizeof(float));
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    for (int64_t m = 0; m < M; ++m) {
      float* cm = c + m * ldy;
      const __m256 r = _mm256_set1_ps(sx[m]);
      _mm256_storeu_ps(cm, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(cm), r), s0, b0));
      _mm256_storeu_ps(cm + 8, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(cm + 8), r), s1, b1));
    }
  }
}

}  // namespace dotf::avx2::DOTF_INT8_NS
