// argmax_top1_cuda: the tensor wrapper of the greedy choice + top-1 probability kernel
// (ops/cuda/sampling.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace dotf {

void argmax_top1_cuda(const at::Tensor& logits, at::Tensor& ids, at::Tensor& probs, bool with_prob) {
  // logits is a contiguous [T, V] tensor with V > 0 (argmax_top1 makes sure); outputs were made for it.
  DOTF_CHECK(logits.is_contiguous(), "argmax_top1: logits must be contiguous");
  DOTF_CHECK_SAME_DEVICE(ids, logits, "ids");
  DOTF_CHECK_SAME_DEVICE(probs, logits, "probs");
  DOTF_CHECK_DTYPE(ids, at::kLong, "ids");
  DOTF_CHECK_DTYPE(probs, at::kFloat, "probs");
  DOTF_CHECK(ids.numel() == logits.size(0) && probs.numel() == logits.size(0), "argmax_top1: outputs must be [T]");
  DOTF_CHECK_ARG(logits.size(1) < std::numeric_limits<int32_t>::max(), "argmax_top1: vocabulary too large");
  DOTF_CHECK_ARG(logits.size(0) <= std::numeric_limits<int32_t>::max(), "argmax_top1: too many rows");
  const c10::cuda::CUDAGuard guard(logits.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(logits.scalar_type(), "argmax_top1", [&](auto tag) {
    using T = decltype(tag);
    cuda::launch_argmax_top1<T>(logits.data_ptr<T>(), logits.size(0), static_cast<int>(logits.size(1)),
                                ids.data_ptr<int64_t>(), probs.data_ptr<float>(), with_prob, stream);
  });
}

}  // namespace dotf
