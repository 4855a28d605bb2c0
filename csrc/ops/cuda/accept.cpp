// greedy_accept_cuda: the tensor wrapper of the greedy acceptance kernel (ops/cuda/accept.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace dotf {

void greedy_accept_cuda(const at::Tensor& drafts, const at::Tensor& target, at::Tensor& out) {
  // Ranks, dtypes, sizes and contiguity are checked by greedy_accept.
  DOTF_CHECK_SAME_DEVICE(drafts, target, "drafts");
  DOTF_CHECK_SAME_DEVICE(out, target, "out");
  DOTF_CHECK(out.numel() == 2 && out.scalar_type() == at::kLong && out.is_contiguous(),
             "greedy_accept: out must be a contiguous int64 [2] tensor");
  const c10::cuda::CUDAGuard guard(target.device());
  cuda::launch_greedy_accept(drafts.numel() > 0 ? drafts.data_ptr<int64_t>() : nullptr, target.data_ptr<int64_t>(),
                             drafts.numel(), out.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream());
}

}  // namespace dotf
