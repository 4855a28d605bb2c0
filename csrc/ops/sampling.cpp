#include "ops/sampling.h"

#include "common/check.h"
#include "ops/dispatch.h"

#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace dotf {

template <typename scalar_t>
void argmax_top1_cpu(const scalar_t* logits, int64_t rows, int64_t vocab, int64_t* ids, float* probs, bool with_prob) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* row = logits + r * vocab;
      // First index of the maximum, like torch.argmax.
      double best = static_cast<double>(row[0]);
      int64_t best_id = 0;
      bool finite = std::isfinite(best);
      for (int64_t v = 1; v < vocab; ++v) {
        const double x = static_cast<double>(row[v]);
        finite &= std::isfinite(x);
        if (x > best) { best = x; best_id = v; }
      }
      ids[r] = finite ? best_id : -1;
      probs[r] = 0.0f;
      if (!finite || !with_prob) continue;
      float denom = 0;
      for (int64_t v = 0; v < vocab; ++v) denom += std::exp(static_cast<float>(static_cast<double>(row[v]) - best));
      probs[r] = 1.0f / denom;
    }
  });
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
