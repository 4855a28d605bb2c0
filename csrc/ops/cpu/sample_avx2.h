#pragma once
// The float32 passes of the sampling op (ops/sample.cpp) vectorized for AVX2+FMA CPUs. Callers check
// cpu_has_avx2_fma() first (ops/cpu/features.h).
#include <cstdint>

namespace dotf::avx2 {

// The largest of x[0, n) into *top and how many elements are > -inf into *finite; false when an element
// is NaN or +inf (-inf is a removed token, not an error).
bool row_max(const float* x, int64_t n, float* top, int64_t* finite);
// The k-th largest of x[0, n) (ties counted), 1 <= k <= n.
float kth_largest(const float* x, int64_t n, int64_t k);
// out[v] = exp((x[v] - top) * inv_t) where x[v] >= floor, else 0 (x <= top); returns their sum.
double exp_shifted(const float* x, int64_t n, float top, float inv_t, float floor, float* out);
// Zeroes the w[v] < threshold; returns the sum of what is left.
double zero_below(float* w, int64_t n, float threshold);
// w[v] *= factor.
void scale(float* w, int64_t n, float factor);
// The first v whose cumulative weight exceeds u * sum(w) (the last positive-weight v when rounding leaves
// none; -1 when every weight is 0).
int64_t draw(const float* w, int64_t n, double u);

}  // namespace dotf::avx2
