#include "ops/cpu/sample_avx2.h"

#include "ops/cpu/features.h"
#include "ops/cpu/simd.h"

#include <cmath>
#include <functional>
#include <limits>
#include <queue>
#include <vector>

namespace dotf::avx2 {

#ifdef DOTF_HAVE_AVX2_KERNEL

DOTF_AVX2 bool row_max(const float* x, int64_t n, float* top, int64_t* finite) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 mx = _mm256_sub_ps(_mm256_setzero_ps(), inf), bad = _mm256_setzero_ps();
  int64_t count = 0, v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 xv = _mm256_loadu_ps(x + v);
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(xv, xv, _CMP_UNORD_Q), _mm256_cmp_ps(xv, inf, _CMP_EQ_OQ)));
    count += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(xv, _mm256_sub_ps(_mm256_setzero_ps(), inf),
                                                                 _CMP_GT_OQ)));
    mx = _mm256_max_ps(mx, xv);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx);
  float best = lanes[0];
  for (float l : lanes) best = l > best ? l : best;
  bool ok = _mm256_movemask_ps(bad) == 0;
  for (; v < n; ++v) {
    ok &= !std::isnan(x[v]) && x[v] != std::numeric_limits<float>::infinity();
    count += x[v] > -std::numeric_limits<float>::infinity();
    best = x[v] > best ? x[v] : best;
  }
  *top = best;
  *finite = count;
  return ok;
}

DOTF_AVX2 float kth_largest(const float* x, int64_t n, int64_t k) {
  std::priority_queue<float, std::vector<float>, std::greater<float>> heap;  // the k largest so far
  int64_t v = 0;
  for (; v < n && static_cast<int64_t>(heap.size()) < k; ++v) heap.push(x[v]);
  for (; v + 8 <= n; v += 8) {  // most blocks hold nothing above the heap's minimum: one compare each
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + v), _mm256_set1_ps(heap.top()), _CMP_GT_OQ));
    for (; mask; mask &= mask - 1) {
      const float y = x[v + __builtin_ctz(mask)];
      if (y > heap.top()) {
        heap.pop();
        heap.push(y);
      }
    }
  }
  for (; v < n; ++v)
    if (x[v] > heap.top()) {
      heap.pop();
      heap.push(x[v]);
    }
  return heap.top();
}

DOTF_AVX2 double exp_shifted(const float* x, int64_t n, float top, float inv_t, float floor, float* out) {
  const __m256 shift = _mm256_set1_ps(top), scale = _mm256_set1_ps(inv_t), lo = _mm256_set1_ps(floor);
  __m256 sum = _mm256_setzero_ps();
  double total = 0;
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 xv = _mm256_loadu_ps(x + v);
    const __m256 e = _mm256_and_ps(_mm256_cmp_ps(xv, lo, _CMP_GE_OQ),
                                   simd::exp8_nonpositive(_mm256_mul_ps(_mm256_sub_ps(xv, shift), scale)));
    _mm256_storeu_ps(out + v, e);
    sum = _mm256_add_ps(sum, e);
    if ((v & 1023) == 1016) {  // a float lane sums at most 128 terms of <= 1 before joining the double
      total += simd::hsum8(sum);
      sum = _mm256_setzero_ps();
    }
  }
  total += simd::hsum8(sum);
  for (; v < n; ++v) {
    out[v] = x[v] >= floor ? std::exp((x[v] - top) * inv_t) : 0.0f;
    total += out[v];
  }
  return total;
}

DOTF_AVX2 double zero_below(float* w, int64_t n, float threshold) {
  const __m256 t = _mm256_set1_ps(threshold);
  double total = 0;
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 kept = _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(w + v), t, _CMP_GE_OQ), _mm256_loadu_ps(w + v));
    _mm256_storeu_ps(w + v, kept);
    total += simd::hsum8(kept);
  }
  for (; v < n; ++v) {
    if (w[v] < threshold) w[v] = 0;
    total += w[v];
  }
  return total;
}

DOTF_AVX2 void scale(float* w, int64_t n, float factor) {
  const __m256 f = _mm256_set1_ps(factor);
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) _mm256_storeu_ps(w + v, _mm256_mul_ps(_mm256_loadu_ps(w + v), f));
  for (; v < n; ++v) w[v] *= factor;
}

DOTF_AVX2 int64_t draw(const float* w, int64_t n, double u) {
  // Block sums of 8 find the block holding the target; the scalar walk inside it picks the token.
  const int64_t blocks = n / 8;
  std::vector<float> block_sum(blocks);
  double total = 0;
  for (int64_t b = 0; b < blocks; ++b) total += block_sum[b] = simd::hsum8(_mm256_loadu_ps(w + 8 * b));
  for (int64_t v = 8 * blocks; v < n; ++v) total += w[v];
  const double target = u * total;
  double cum = 0;
  int64_t last = -1, v = 0;
  for (int64_t b = 0; b < blocks; ++b, v += 8) {
    if (block_sum[b] <= 0) continue;
    if (cum + block_sum[b] <= target) {
      cum += block_sum[b];
      for (int i = 7; i >= 0; --i)
        if (w[v + i] > 0) {
          last = v + i;
          break;
        }
      continue;
    }
    break;
  }
  for (; v < n; ++v) {
    if (w[v] <= 0) continue;
    cum += w[v];
    last = v;
    if (cum > target) return v;
  }
  return last;
}

#else  // not x86-64 GCC/Clang: callers never get here (cpu_has_avx2_fma() is false)

bool row_max(const float*, int64_t, float*, int64_t*) { return false; }
float kth_largest(const float*, int64_t, int64_t) { return 0; }
double exp_shifted(const float*, int64_t, float, float, float, float*) { return 0; }
double zero_below(float*, int64_t, float) { return 0; }
void scale(float*, int64_t, float) {}
int64_t draw(const float*, int64_t, double) { return -1; }

#endif

}  // namespace dotf::avx2
