// CUDA greedy acceptance: one warp finds the first mismatch with a ballot per 32 drafts.
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

// drafts: [k]; target: [k+1]; out: [2] = (accepted, bonus or -1). block: one warp.
__global__ void greedy_accept_kernel(const int64_t* __restrict__ drafts, const int64_t* __restrict__ target,
                                     int64_t k, int64_t* __restrict__ out) {
  const int lane = threadIdx.x;
  int64_t accepted = k;
  for (int64_t base = 0; base < k; base += kWarpSize) {
    const int64_t i = base + lane;
    const unsigned mismatch = __ballot_sync(kFullMask, i < k && drafts[i] != target[i]);
    if (mismatch != 0) {  // warp-uniform
      accepted = base + __ffs(mismatch) - 1;
      break;
    }
  }
  // Only target[accepted] is used (-1 when non-finite): rows past the acceptance point never matter.
  if (lane == 0) {
    out[0] = accepted;
    out[1] = target[accepted];
  }
}

void launch_greedy_accept(const int64_t* drafts, const int64_t* target, int64_t k, int64_t* out,
                          cudaStream_t stream) {
  greedy_accept_kernel<<<1, kWarpSize, 0, stream>>>(drafts, target, k, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace dotf::cuda
