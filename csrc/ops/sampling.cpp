#include "ops/sampling.h"

#include "core/check.h"
#include "ops/cpu/features.h"
#include "ops/cpu/sampling_avx2.h"
#include "ops/cuda/entries.h"
#include "ops/dtype_dispatch.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/topk.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace dotf {

namespace {

// The largest of row[0, n) (-inf when empty).
template <typename scalar_t>
double max_of(const scalar_t* row, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx2_fma()) return avx2::max_of(row, n);
  }
  double best = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < n; ++v) best = std::max(best, static_cast<double>(row[v]));
  return best;
}

// First index of the maximum (like torch.argmax) into *best, or -1 when the row holds NaN or +inf or
// nothing but -inf (a removed token).
template <typename scalar_t>
int64_t argmax_or_nonfinite(const scalar_t* row, int64_t vocab, double* best) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx2_fma()) {
      float m = 0;
      const int64_t id = avx2::argmax_or_nonfinite(row, vocab, &m);
      *best = m;
      return id;
    }
  }
  *best = -std::numeric_limits<double>::infinity();
  int64_t best_id = -1;
  bool ok = true;
  for (int64_t v = 0; v < vocab; ++v) {
    const double x = static_cast<double>(row[v]);
    ok &= !std::isnan(x) && x != std::numeric_limits<double>::infinity();
    if (x > *best) { *best = x; best_id = v; }
  }
  return ok ? best_id : -1;
}

// sum_v exp(row[v] - max): the softmax denominator, so top-1 probability = 1 / it. Only compared
// with the draft-exit threshold gamma, never deciding a token, so the vector exp's ~2 ulp are fine.
template <typename scalar_t>
float softmax_denominator(const scalar_t* row, int64_t vocab, double max_logit) {
  float denom = 0;
  int64_t v = 0;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (cpu_has_avx2_fma()) denom = avx2::softmax_denominator_blocks(row, vocab, static_cast<float>(max_logit), &v);
  }
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
  if (x.is_cuda()) {
    argmax_top1_cuda(x, ids, probs, with_prob);
    return {ids, probs};
  }
  DOTF_DISPATCH_FLOATING(x.scalar_type(), "argmax_top1", [&] {
    argmax_top1_cpu<scalar_t>(x.data_ptr<scalar_t>(), x.size(0), x.size(1), ids.data_ptr<int64_t>(),
                              probs.data_ptr<float>(), with_prob);
  });
  return {ids, probs};
}

}  // namespace dotf
