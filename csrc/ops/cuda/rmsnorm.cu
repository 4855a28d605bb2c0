// CUDA residual add + RMSNorm + cosine similarity: one block per row, warp-shuffle reductions.
// Same arithmetic as add_rmsnorm_cossim_cpu (ops/rmsnorm.cpp): the add in the storage dtype, the
// statistics in float32, the normalised value rounded to the storage dtype before the weight
// multiply. Only the summation order differs (a tree instead of a left-to-right sum).
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

// h: [rows, cols] residual stream, updated in place when delta is given
// delta: [rows, cols] or nullptr; weight: [cols]; normed: [rows, cols]
// cos: [rows] float32 or nullptr (needs delta)
// VEC elements per access; cols % VEC == 0 and every pointer VEC-aligned when VEC > 1.
template <typename T, int VEC>
__global__ void add_rmsnorm_cossim_kernel(T* __restrict__ h, const T* __restrict__ delta,
                                          const T* __restrict__ weight, T* __restrict__ normed,
                                          float* __restrict__ cos, int64_t cols, float eps) {
  const int64_t row = blockIdx.x;
  T* hr = h + row * cols;
  const T* dr = delta ? delta + row * cols : nullptr;
  T* nr = normed + row * cols;
  const int64_t nvec = cols / VEC;

  // Pass 1: residual add (written back), and sum(old*new), sum(old^2), sum(new^2).
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    Vec<T, VEC> x = load_vec<T, VEC>(hr + i * VEC);
    if (dr) {
      const Vec<T, VEC> d = load_vec<T, VEC>(dr + i * VEC);
      Vec<T, VEC> y;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float a = to_float(x.v[j]);
        y.v[j] = from_float<T>(__fadd_rn(a, to_float(d.v[j])));
        const float b = to_float(y.v[j]);
        acc[0] = fmaf(a, b, acc[0]);
        acc[1] = fmaf(a, a, acc[1]);
        acc[2] = fmaf(b, b, acc[2]);
      }
      store_vec<T, VEC>(hr + i * VEC, y);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float b = to_float(x.v[j]);
        acc[2] = fmaf(b, b, acc[2]);
      }
    }
  }
  block_sum<3>(acc);
  const float inv_rms = 1.0f / sqrtf(acc[2] / static_cast<float>(cols) + eps);
  if (cos && threadIdx.x == 0) {
    const float denom = sqrtf(acc[1]) * sqrtf(acc[2]);
    cos[row] = denom > 0.0f ? acc[0] / denom : 1.0f;
  }

  // Pass 2: normed = weight * round(h * inv_rms). Each thread re-reads the elements it wrote.
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const Vec<T, VEC> x = load_vec<T, VEC>(hr + i * VEC);
    const Vec<T, VEC> w = load_vec<T, VEC>(weight + i * VEC);
    Vec<T, VEC> y;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float unit = mul_round<T>(to_float(x.v[j]), inv_rms);
      y.v[j] = from_float<T>(__fmul_rn(to_float(w.v[j]), unit));
    }
    store_vec<T, VEC>(nr + i * VEC, y);
  }
}

template <typename T>
void launch_add_rmsnorm_cossim(T* h, const T* delta, const T* weight, T* normed, float* cos, int64_t rows,
                               int64_t cols, float eps, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = cols % kVec == 0 && aligned_to(h, 16) && aligned_to(weight, 16) && aligned_to(normed, 16) &&
                   (delta == nullptr || aligned_to(delta, 16));
  const int64_t work = vec ? cols / kVec : cols;
  const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, ceil_div(work, 32) * 32)));
  if (vec) {
    add_rmsnorm_cossim_kernel<T, kVec><<<rows, threads, 0, stream>>>(h, delta, weight, normed, cos, cols, eps);
  } else {
    add_rmsnorm_cossim_kernel<T, 1><<<rows, threads, 0, stream>>>(h, delta, weight, normed, cos, cols, eps);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DOTF_INSTANTIATE(T) \
  template void launch_add_rmsnorm_cossim<T>(T*, const T*, const T*, T*, float*, int64_t, int64_t, float, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
