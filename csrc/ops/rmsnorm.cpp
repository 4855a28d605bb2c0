#include "ops/rmsnorm.h"

#include "core/check.h"
#include "ops/cuda/entries.h"
#include "ops/dtype_dispatch.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace dotf {

template <typename scalar_t>
void add_rmsnorm_cossim_cpu(scalar_t* h, const scalar_t* delta, const scalar_t* weight, scalar_t* normed,
                            float* cos, int64_t rows, int64_t cols, float eps) {
  using acc = acc_t<scalar_t>;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* hr = h + r * cols;
      acc dot = 0, old_sq = 0, new_sq = 0;
      float sum_sq = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const scalar_t before = hr[c];
        const scalar_t after = delta ? static_cast<scalar_t>(before + delta[r * cols + c]) : before;
        hr[c] = after;
        const acc a = static_cast<acc>(before), b = static_cast<acc>(after);
        dot += a * b;
        old_sq += a * a;
        new_sq += b * b;
        const float f = static_cast<float>(after);
        sum_sq += f * f;
      }
      const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(cols) + eps);
      for (int64_t c = 0; c < cols; ++c) {
        const scalar_t unit = static_cast<scalar_t>(static_cast<float>(hr[c]) * inv_rms);
        normed[r * cols + c] = static_cast<scalar_t>(weight[c] * unit);
      }
      if (cos) {
        const acc denom = std::sqrt(old_sq) * std::sqrt(new_sq);
        cos[r] = denom > 0 ? static_cast<float>(dot / denom) : 1.0f;
      }
    }
  });
}

void add_rmsnorm_cossim(at::Tensor& h, const at::Tensor& delta, const at::Tensor& weight, double eps,
                        at::Tensor& normed, const at::Tensor& cos) {
  DOTF_CHECK_DIM(h, 2, "h");
  DOTF_CHECK(h.is_contiguous() && normed.is_contiguous() && weight.is_contiguous(), "add_rmsnorm_cossim: contiguous tensors expected");
  DOTF_CHECK(normed.sizes() == h.sizes() && normed.scalar_type() == h.scalar_type(), "normed must match h");
  DOTF_CHECK_SIZE(weight, 0, h.size(1), "weight");
  if (delta.defined()) {
    DOTF_CHECK(delta.sizes() == h.sizes() && delta.is_contiguous(), "delta must match h, got ", delta.sizes());
  }
  if (cos.defined()) {
    DOTF_CHECK(delta.defined(), "cos needs delta");
    DOTF_CHECK(cos.scalar_type() == at::kFloat && cos.numel() == h.size(0) && cos.is_contiguous(),
               "cos must be a contiguous float32 [T] tensor");
  }
  if (h.is_cuda()) return add_rmsnorm_cossim_cuda(h, delta, weight, eps, normed, cos);
  DOTF_DISPATCH_FLOATING(h.scalar_type(), "add_rmsnorm_cossim", [&] {
    add_rmsnorm_cossim_cpu<scalar_t>(h.data_ptr<scalar_t>(), delta.defined() ? delta.data_ptr<scalar_t>() : nullptr,
                                     weight.data_ptr<scalar_t>(), normed.data_ptr<scalar_t>(),
                                     cos.defined() ? cos.data_ptr<float>() : nullptr, h.size(0), h.size(1),
                                     static_cast<float>(eps));
  });
}

}  // namespace dotf
