// warped_probabilities_cuda, sample_rows_cuda, speculative_accept_cuda: the tensor wrappers of the sampling
// kernels (ops/cuda/sample.cu). No host read: results stay on the device until the caller reads them.
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"
#include "ops/sample.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace dotf {

namespace {

// Probability rows on CUDA are float32 (what warped_probabilities_cuda returns).
void check_float32_rows(const at::Tensor& t, const char* op, const char* name) {
  DOTF_CHECK_TYPE(t.scalar_type() != at::kDouble, op, ": float64 is not supported on CUDA (use float32; float64 ",
                  "runs on CPU only)");
  DOTF_CHECK_TYPE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32 on CUDA, got ", t.scalar_type());
}

void check_sizes(int64_t rows, int64_t vocab, const char* op) {
  DOTF_CHECK_ARG(rows <= std::numeric_limits<int32_t>::max(), op, ": too many rows (", rows, ")");
  DOTF_CHECK_ARG(vocab < std::numeric_limits<int32_t>::max(), op, ": vocabulary too large (", vocab, ")");
}

}  // namespace

at::Tensor warped_probabilities_cuda(const at::Tensor& logits, const SamplingParams& params) {
  // logits is a contiguous [T, V] tensor with V > 0 and params are valid (warped_probabilities makes sure).
  DOTF_CHECK(logits.is_contiguous(), "warped_probabilities: logits must be contiguous");
  check_sizes(logits.size(0), logits.size(1), "warped_probabilities");
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor probs = at::empty(logits.sizes(), logits.options().dtype(at::kFloat));
  const cuda::WarperArgs args{static_cast<float>(1.0 / params.temperature), params.top_k, params.top_p,
                              static_cast<float>(params.min_p)};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(logits.scalar_type(), "warped_probabilities", [&](auto tag) {
    using T = decltype(tag);
    cuda::launch_warped_probabilities<T>(logits.data_ptr<T>(), logits.size(0), logits.size(1), args,
                                         probs.data_ptr<float>(), stream);
  });
  return probs;
}

at::Tensor sample_rows_cuda(const at::Tensor& probs, const at::Tensor& uniforms) {
  // Ranks, the uniforms' dtype and size are checked by sample_rows.
  DOTF_CHECK(probs.is_contiguous() && uniforms.is_contiguous(), "sample_rows: probs and uniforms must be contiguous");
  DOTF_CHECK_SAME_DEVICE(uniforms, probs, "uniforms");
  check_float32_rows(probs, "sample_rows", "probs");
  check_sizes(probs.size(0), probs.size(1), "sample_rows");
  const c10::cuda::CUDAGuard guard(probs.device());
  at::Tensor ids = at::empty({probs.size(0)}, probs.options().dtype(at::kLong));
  cuda::launch_sample_rows(probs.data_ptr<float>(), uniforms.data_ptr<double>(), probs.size(0), probs.size(1),
                           ids.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream());
  return ids;
}

std::pair<at::Tensor, at::Tensor> speculative_accept_cuda(const at::Tensor& p, const at::Tensor& q,
                                                          const at::Tensor& drafts, const at::Tensor& lookup,
                                                          const at::Tensor& uniforms) {
  // Ranks, shapes, the dtypes of drafts, lookup and uniforms, and p and q sharing a dtype are checked by
  // speculative_accept.
  DOTF_CHECK(p.is_contiguous() && q.is_contiguous() && drafts.is_contiguous() && lookup.is_contiguous() &&
                 uniforms.is_contiguous(),
             "speculative_accept: inputs must be contiguous");
  DOTF_CHECK_SAME_DEVICE(q, p, "q");
  DOTF_CHECK_SAME_DEVICE(drafts, p, "drafts");
  DOTF_CHECK_SAME_DEVICE(lookup, p, "lookup");
  DOTF_CHECK_SAME_DEVICE(uniforms, p, "uniforms");
  check_float32_rows(p, "speculative_accept", "p");
  check_sizes(p.size(0), p.size(1), "speculative_accept");
  const int64_t k = drafts.size(0);
  const c10::cuda::CUDAGuard guard(p.device());
  at::Tensor out = at::empty({2}, drafts.options());
  at::Tensor ratios = at::empty({k}, uniforms.options());
  cuda::launch_speculative_accept(p.data_ptr<float>(), k > 0 ? q.data_ptr<float>() : nullptr,
                                  k > 0 ? drafts.data_ptr<int64_t>() : nullptr,
                                  k > 0 ? lookup.data_ptr<bool>() : nullptr, uniforms.data_ptr<double>(), k,
                                  p.size(1), out.data_ptr<int64_t>(), k > 0 ? ratios.data_ptr<double>() : nullptr,
                                  at::cuda::getCurrentCUDAStream());
  return {out, ratios};
}

}  // namespace dotf
