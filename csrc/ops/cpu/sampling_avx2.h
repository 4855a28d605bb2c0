#pragma once
// The AVX2 loops of argmax_top1 and top1_margin (ops/sampling.cpp) over one row of float32 logits.
// Each returns what the scalar loop there returns for the same row. Callers check cpu_has_avx2_fma()
// (ops/cpu/features.h).
#include <cstdint>

namespace dotf::avx2 {

// x: [n]. The largest element (-inf when n == 0); exact in any order. A NaN element is skipped, as
// std::max(best, NaN) skips it.
float max_of(const float* x, int64_t n);

// x: [n], n > 0. First index of the maximum (like torch.argmax), or -1 when any element is NaN or +inf
// or all are -inf (removed tokens); *max_out receives the maximum otherwise.
int64_t argmax_or_nonfinite(const float* x, int64_t n, float* max_out);

// x: [n]. sum of exp(x[v] - max_logit) over the whole 8-lane blocks of x (vector exp, ~2 ulp);
// *done receives how many leading elements were summed (the caller sums the rest).
float softmax_denominator_blocks(const float* x, int64_t n, float max_logit, int64_t* done);

}  // namespace dotf::avx2
