// CUDA silu(gate) * up in one pass: what at::silu + mul_ compute (float32 math, the silu rounded to
// the storage dtype before the product), without their second launch and [T, I] intermediate.
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

// gate_up: [rows, 2I]; out: [rows, I]; grid-stride over rows * I elements.
template <typename T>
__global__ void silu_mul_kernel(const T* __restrict__ gate_up, T* __restrict__ out, int64_t rows, int64_t I) {
  const int64_t n = rows * I;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / I, c = i % I;
    const float x = to_float(gate_up[r * 2 * I + c]);
    // ATen's silu: x / (1 + exp(-x)) in float (IEEE division, expf), rounded to T.
    const float s = to_float(from_float<T>(x / (1.0f + expf(-x))));
    out[i] = from_float<T>(__fmul_rn(s, to_float(gate_up[r * 2 * I + I + c])));
  }
}

template <typename T>
void launch_silu_mul(const T* gate_up, T* out, int64_t rows, int64_t I, cudaStream_t stream) {
  const int64_t n = rows * I;
  if (n == 0) return;
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(n, kThreads), 65535));
  silu_mul_kernel<T><<<blocks, kThreads, 0, stream>>>(gate_up, out, rows, I);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DOTF_INSTANTIATE(T) template void launch_silu_mul<T>(const T*, T*, int64_t, int64_t, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
