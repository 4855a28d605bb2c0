// CUDA attention over the KV cache: the launch of the split kernel (ops/cuda/attention_split.cuh,
// which also explains the design), the choice of the split count, and the combine kernel that merges
// the splits' partial outputs when there are several.
#include "ops/cuda/kernels.h"

#include "ops/cuda/attention_split.cuh"
#include "ops/cuda/utils.cuh"

#include <algorithm>

namespace dotf::cuda {

namespace {

// part_o: [splits, rows, D], part_lse: [splits, rows] -> out: [rows, D]; grid: rows
template <typename T>
__global__ void attention_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                                         T* __restrict__ out, int64_t rows, int D, int splits) {
  const int64_t row = blockIdx.x;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_lse[s * rows + row]);
  float sum = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float lse = part_lse[s * rows + row];
    if (lse != -INFINITY) sum += expf(lse - mx);
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float lse = part_lse[s * rows + row];
      if (lse != -INFINITY) o = fmaf(expf(lse - mx), part_o[(s * rows + row) * D + d], o);
    }
    out[row * D + d] = from_float<T>(o / sum);
  }
}

template <typename T, int DMAX, bool VEC>
void launch_attention_split(const T* q, const T* k, const T* v, T* out, float* part_o, float* part_lse,
                            const AttentionArgs& a, int q_tiles, cudaStream_t stream) {
  constexpr size_t smem = attention_smem_bytes<T, DMAX, VEC>();
  auto kernel = attention_split_kernel<T, DMAX, VEC>;
  if constexpr (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(q_tiles), static_cast<unsigned>(a.kv_heads), static_cast<unsigned>(a.splits));
  kernel<<<grid, kAttnThreads, smem, stream>>>(q, k, v, out, part_o, part_lse, a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Query tiles of kRows rows per KV head: the split grid's x.
int64_t query_tiles(const AttentionArgs& a) {
  return ceil_div(static_cast<int64_t>(a.tokens) * (a.heads / a.kv_heads), kRows);
}

}  // namespace

// Picks the split count: enough blocks to fill the GPU twice over, at least kMinChunk keys each.
void choose_attention_splits(AttentionArgs& a, int sm_count) {
  const int64_t blocks_per_split = query_tiles(a) * a.kv_heads;
  const int64_t keys = a.start + a.tokens;
  int64_t splits = 1;
  const int64_t target = 2 * static_cast<int64_t>(sm_count);
  if (blocks_per_split < target && keys > kMinChunk)
    splits = std::min(ceil_div(target, blocks_per_split), ceil_div(keys, kMinChunk));
  int64_t chunk = ceil_div(ceil_div(keys, splits), kBlockKeys) * kBlockKeys;
  splits = ceil_div(keys, chunk);
  a.chunk = chunk;
  a.splits = static_cast<int>(splits);
}

template <typename T>
void launch_attention(const T* q, const T* k, const T* v, T* out, float* part_o, float* part_lse,
                      const AttentionArgs& a, size_t smem_optin, cudaStream_t stream) {
  const int q_tiles = static_cast<int>(query_tiles(a));
  const int64_t D = a.head_dim;
  // The staged path needs rows of whole 16-byte vectors and room for its stage (a float32 stage
  // at head_dim 128 is ~137 KB: more than some GPUs give a block; they take the word path).
  const bool vec_rows = (D * static_cast<int64_t>(sizeof(T))) % 16 == 0 && aligned_to(k, 16) && aligned_to(v, 16);
  if (vec_rows && D <= 64) {
    launch_attention_split<T, 64, true>(q, k, v, out, part_o, part_lse, a, q_tiles, stream);
  } else if (vec_rows && attention_smem_bytes<T, 128, true>() <= smem_optin) {
    launch_attention_split<T, 128, true>(q, k, v, out, part_o, part_lse, a, q_tiles, stream);
  } else {
    launch_attention_split<T, 128, false>(q, k, v, out, part_o, part_lse, a, q_tiles, stream);
  }
  if (a.splits > 1)
    launch_attention_combine(part_o, part_lse, out, static_cast<int64_t>(a.tokens) * a.heads, a.head_dim, a.splits,
                             stream);
}

template <typename T>
void launch_attention_combine(const float* part_o, const float* part_lse, T* out, int64_t rows, int D, int splits,
                              cudaStream_t stream) {
  const int threads = static_cast<int>(std::min<int64_t>(128, ceil_div(D, 32) * 32));
  attention_combine_kernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(part_o, part_lse, out, rows, D,
                                                                                    splits);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DOTF_INSTANTIATE(T)                                                                        \
  template void launch_attention<T>(const T*, const T*, const T*, T*, float*, float*, const AttentionArgs&, \
                                    size_t, cudaStream_t);                                         \
  template void launch_attention_combine<T>(const float*, const float*, T*, int64_t, int, int, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
