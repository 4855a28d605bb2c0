#include "ops/cpu/sampling_avx2.h"

#include "ops/cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace dotf::avx2 {

#ifdef DOTF_HAVE_AVX2_KERNEL
namespace {

// Whole 8-lane blocks of exp(x - max); *done receives how many elements were summed.
DOTF_AVX2 float simd_denominator(const float* x, int64_t n, float max_logit, int64_t* done) {
  const __m256 shift = _mm256_set1_ps(max_logit);
  __m256 sum = _mm256_setzero_ps();
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) sum = _mm256_add_ps(sum, simd::exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + v), shift)));
  *done = v;
  return simd::hsum8(sum);
}

// First index of the maximum of x[0, n), or -1 when any element is NaN or +inf or all are -inf (the
// scalar loop's contract, same result: float -> double is exact, so both compare the same values).
DOTF_AVX2 int64_t simd_argmax(const float* x, int64_t n, float* max_out) {
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256 mx = _mm256_set1_ps(-INFINITY), bad = _mm256_setzero_ps();
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 xv = _mm256_loadu_ps(x + v);
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(xv, xv, _CMP_UNORD_Q), _mm256_cmp_ps(xv, inf, _CMP_EQ_OQ)));
    mx = _mm256_max_ps(mx, xv);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, mx);
  float best = lanes[0];
  for (float l : lanes) best = std::max(best, l);
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (int64_t t = v; t < n; ++t) {
    ok &= !std::isnan(x[t]) && x[t] != INFINITY;
    best = std::max(best, x[t]);
  }
  if (!ok || best == -INFINITY) return -1;
  *max_out = best;
  for (int64_t t = 0; t < n; ++t)
    if (x[t] == best) return t;
  return -1;  // unreachable for finite input
}

}  // namespace

float max_of(const float* x, int64_t n) { return simd::max_of(x, n); }
int64_t argmax_or_nonfinite(const float* x, int64_t n, float* max_out) { return simd_argmax(x, n, max_out); }
float softmax_denominator_blocks(const float* x, int64_t n, float max_logit, int64_t* done) {
  return simd_denominator(x, n, max_logit, done);
}

#else  // not x86-64: cpu_has_avx2_fma() is false, so nothing calls these.

[[noreturn]] static void not_built() { throw std::runtime_error("AVX2 kernels are not built for this architecture"); }
float max_of(const float*, int64_t) { not_built(); }
int64_t argmax_or_nonfinite(const float*, int64_t, float*) { not_built(); }
float softmax_denominator_blocks(const float*, int64_t, float, int64_t*) { not_built(); }

#endif

}  // namespace dotf::avx2
