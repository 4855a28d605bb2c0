#include "ops/accept.h"

#include "core/check.h"
#include "ops/cuda/entries.h"

#include <ATen/ops/empty.h>

namespace dotf {

void greedy_accept_cpu(const int64_t* drafts, const int64_t* target, int64_t k, int64_t* out) {
  int64_t accepted = 0;
  while (accepted < k && drafts[accepted] == target[accepted]) ++accepted;
  // Only rows up to the acceptance point are used: a non-finite row past it (e.g. after a rejected
  // draft token whose embedding is NaN) must not fail a call that plain decoding completes.
  out[0] = accepted;
  out[1] = target[accepted];  // -1 when that row was non-finite
}

at::Tensor greedy_accept(const at::Tensor& drafts_in, const at::Tensor& target_in) {
  DOTF_CHECK_DIM(drafts_in, 1, "drafts");
  DOTF_CHECK_DIM(target_in, 1, "target");
  DOTF_CHECK_DTYPE(drafts_in, at::kLong, "drafts");
  DOTF_CHECK_DTYPE(target_in, at::kLong, "target");
  DOTF_CHECK_SIZE(target_in, 0, drafts_in.size(0) + 1, "target");
  DOTF_CHECK_DEVICE(drafts_in, target_in.device(), "drafts");
  const at::Tensor drafts = drafts_in.contiguous(), target = target_in.contiguous();
  at::Tensor out = at::empty({2}, target.options());
  if (target.is_cuda()) {
    greedy_accept_cuda(drafts, target, out);
    return out;
  }
  greedy_accept_cpu(drafts.data_ptr<int64_t>(), target.data_ptr<int64_t>(), drafts.size(0), out.data_ptr<int64_t>());
  return out;
}

}  // namespace dotf
