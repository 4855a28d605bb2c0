#include "ops/sampling.h"

#include "core/check.h"
#include "ops/cpu_simd.h"
#include "ops/dispatch.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/topk.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <type_traits>

namespace dotf {

namespace {

#ifdef DOTF_HAVE_AVX2_KERNEL
// Whole 8-lane blocks of exp(x - max); *done receives how many elements were summed.
DOTF_AVX2 float simd_denominator(const float* x, int64_t n, float max_logit, int64_t* done) {
  const __m256 shift = _mm256_set1_ps(max_logit);
  __m256 sum = _mm256_setzero_ps();
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) sum = _mm256_add_ps(sum, simd::exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(x + v), shift)));
  *done = v;
  return simd::hsum8(sum);
}

// First index of the maximum of x[0, n), or -1 when any element is NaN or infinite (the scalar
// loop's contract, same result: float -> double is exact, so both compare the same values).
DOTF_AVX2 int64_t simd_argmax(const float* x, int64_t n, float* max_out) {
  __m256 mx = _mm256_set1_ps(-INFINITY), bad = _mm256_setzero_ps();
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 xv = _mm256_loadu_ps(x + v);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(xv, xv), _mm256_setzero_ps(), _CMP_NEQ_UQ));  // inf/NaN
    mx = _mm256_max_ps(mx, xv);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, mx);
  float best = lanes[0];
  for (float l : lanes) best = std::max(best, l);
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (int64_t t = v; t < n; ++t) {
    finite &= std::isfinite(x[t]);
    best = std::max(best, x[t]);
  }
  if (!finite) return -1;
  *max_out = best;
  for (int64_t t = 0; t < n; ++t)
    if (x[t] == best) return t;
  return -1;  // unreachable for finite input
}
#endif

// The largest of row[0, n) (-inf when empty).
template <typename scalar_t>
double max_of(const scalar_t* row, int64_t n) {
#ifdef DOTF_HAVE_AVX2_KERNEL
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx2_fma()) return simd::max_of(row, n);
  }
#endif
  double best = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < n; ++v) best = std::max(best, static_cast<double>(row[v]));
  return best;
}

// First index of the maximum (like torch.argmax) into *best, or -1 when the row holds NaN or inf.
template <typename scalar_t>
int64_t argmax_or_nonfinite(const scalar_t* row, int64_t vocab, double* best) {
#ifdef DOTF_HAVE_AVX2_KERNEL
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx2_fma()) {
      float m = 0;
      const int64_t id = simd_argmax(row, vocab, &m);
      *best = m;
      return id;
    }
  }
#endif
  *best = static_cast<double>(row[0]);
  int64_t best_id = 0;
  bool finite = std::isfinite(*best);
  for (int64_t v = 1; v < vocab; ++v) {
    const double x = static_cast<double>(row[v]);
    finite &= std::isfinite(x);
    if (x > *best) { *best = x; best_id = v; }
  }
  return finite ? best_id : -1;
}

// sum_v exp(row[v] - max): the softmax denominator, so top-1 probability = 1 / it. Only compared
// with the draft-exit threshold gamma, never deciding a token, so the vector exp's ~2 ulp are fine.
template <typename scalar_t>
float softmax_denominator(const scalar_t* row, int64_t vocab, double max_logit) {
  float denom = 0;
  int64_t v = 0;
#ifdef DOTF_HAVE_AVX2_KERNEL
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx2_fma()) denom = simd_denominator(row, vocab, static_cast<float>(max_logit), &v);
  }
#endif
  double rest = 0;  // a double sum: one float accumulator over ~10^5 terms drifts by ~1e-4
  for (; v < vocab; ++v) rest += std::exp(static_cast<double>(row[v]) - max_logit);
  return static_cast<float>(denom + rest);
}

}  // namespace

template <typename scalar_t>
void argmax_top1_cpu(const scalar_t* logits, int64_t rows, int64_t vocab, int64_t* ids, float* probs, bool with_prob) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* row = logits + r * vocab;
      double best = 0;
      ids[r] = argmax_or_nonfinite(row, vocab, &best);
      probs[r] = ids[r] >= 0 && with_prob ? 1.0f / softmax_denominator(row, vocab, best) : 0.0f;
    }
  });
}

at::Tensor top1_margin(const at::Tensor& logits, const at::Tensor& ids) {
  DOTF_CHECK_DIM(logits, 2, "logits");
  DOTF_CHECK_DIM(ids, 1, "ids");
  DOTF_CHECK_DTYPE(ids, at::kLong, "ids");
  DOTF_CHECK_ARG(ids.size(0) == logits.size(0) && ids.device() == logits.device(), "ids must be [", logits.size(0),
                 "] on the logits' device, got ", ids.sizes(), " on ", ids.device());
  DOTF_CHECK(logits.size(1) > 0, "logits must have a non-empty vocabulary");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  if (vocab == 1) return at::full({rows}, std::numeric_limits<float>::infinity(), logits.options().dtype(at::kFloat));
  if (!logits.device().is_cpu()) {
    // Off the CPU the two largest come from ATen's topk (a -1 id marks a non-finite row: margin 0).
    const auto [values, indices] = at::topk(logits.to(at::kFloat), 2, /*dim=*/1);
    const at::Tensor margin = values.select(1, 0).sub(values.select(1, 1));
    return margin.masked_fill(ids.lt(0), 0.0);
  }
  at::Tensor x = logits.contiguous();
  at::Tensor id = ids.contiguous();
  at::Tensor out = at::empty({rows}, x.options().dtype(at::kFloat));
  DOTF_DISPATCH_FLOATING(x.scalar_type(), "top1_margin", [&] {
    const scalar_t* base = x.data_ptr<scalar_t>();
    const int64_t* best = id.data_ptr<int64_t>();
    float* margin = out.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = best[r];
      DOTF_CHECK_ARG(b < vocab, "ids[", r, "] = ", b, " is outside the vocabulary [0, ", vocab, ")");
      const scalar_t* row = base + r * vocab;
      if (b < 0) {
        margin[r] = 0.0f;
        continue;
      }
      const double second = std::max(max_of(row, b), max_of(row + b + 1, vocab - b - 1));
      margin[r] = static_cast<float>(static_cast<double>(row[b]) - second);
    }
  });
  return out;
}

std::pair<at::Tensor, at::Tensor> argmax_top1(const at::Tensor& logits, bool with_prob) {
  DOTF_CHECK_DIM(logits, 2, "logits");
  DOTF_CHECK(logits.size(1) > 0, "logits must have a non-empty vocabulary");
  at::Tensor x = logits.contiguous();
  at::Tensor ids = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  at::Tensor probs = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
#ifdef DOTF_WITH_CUDA
  if (x.is_cuda()) {
    argmax_top1_cuda(x, ids, probs, with_prob);
    return {ids, probs};
  }
#endif
  DOTF_DISPATCH_FLOATING(x.scalar_type(), "argmax_top1", [&] {
    argmax_top1_cpu<scalar_t>(x.data_ptr<scalar_t>(), x.size(0), x.size(1), ids.data_ptr<int64_t>(),
                              probs.data_ptr<float>(), with_prob);
  });
  return {ids, probs};
}

}  // namespace dotf
