#pragma once
// What dotf's split attention kernels (attention_split.cuh over the exact cache, attention_int8.cu
// over the int8 mirror) share: where a block sits, and how it ends. A block owns one KV head, a tile
// of up to ROWS query rows of its group (row = t * G + g) and one split of the keys. Each warp holds
// an online-softmax state per row (running max m, sum l, EPL output elements per lane); at the end the
// warps' states are merged through shared memory and the block writes its rows' output, or with
// several splits its normalised partial output and log-sum-exp for the combine kernel.
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

struct BlockTile {
  int D, G, kvh, r0, nrows, split, warp, lane;
  // The position of query 0. The launch was sized for a.start; a graph replay's actual start may be
  // smaller, which leaves the splits past it empty (they report -inf log-sum-exp and weigh nothing
  // in the combine).
  int64_t start;
};

// Each warp's online-softmax state per row, empty (max -inf, sum 0, output 0), and the position of each
// row of the tile (-1 for rows past it: it sees no key).
template <int ROWS, int EPL>
__device__ __forceinline__ void init_row_states(float (&m)[ROWS], float (&l)[ROWS], float (&acc)[ROWS][EPL],
                                                int64_t (&pos)[ROWS], const BlockTile& b) {
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    pos[r] = r < b.nrows ? b.start + (b.r0 + r) / b.G : -1;
#pragma unroll
    for (int e = 0; e < EPL; ++e) acc[r][e] = 0.0f;
  }
}

// grid: (ceil(T * G / ROWS), KVH, splits)
template <int ROWS>
__device__ __forceinline__ BlockTile block_tile(const AttentionArgs& a) {
  const int G = a.heads / a.kv_heads, r0 = blockIdx.x * ROWS;
  return BlockTile{a.head_dim, G, static_cast<int>(blockIdx.y), r0, min_of(ROWS, a.tokens * G - r0),
                   static_cast<int>(blockIdx.z), static_cast<int>(threadIdx.x / kWarpSize),
                   static_cast<int>(threadIdx.x % kWarpSize), a.device_start ? *a.device_start : a.start};
}

// merge_m, merge_l: [WARPS][ROWS] and merge_acc: [WARPS][ROWS][DMAX] floats of shared memory that
// no warp uses any more. Rows r < nrows of the tile starting at row r0 (row = t * G + g of KV head
// kvh) are written to out: [T, H * D] when a.splits == 1, else to split `split` of part_o:
// [splits, T * H, D] and part_lse: [splits, T * H]. Contains __syncthreads(): call from every thread.
template <typename T, int ROWS, int WARPS, int DMAX, int EPL>
__device__ __forceinline__ void merge_warps_and_write(float* merge_m, float* merge_l, float* merge_acc,
                                                      const float (&m)[ROWS], const float (&l)[ROWS],
                                                      const float (&acc)[ROWS][EPL], int nrows, int r0, int G,
                                                      int kvh, int split, const AttentionArgs& a, T* out,
                                                      float* part_o, float* part_lse) {
  const int D = a.head_dim;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int e0 = lane * EPL;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (r >= nrows) break;
    if (lane == 0) {
      merge_m[warp * ROWS + r] = m[r];
      merge_l[warp * ROWS + r] = l[r];
    }
#pragma unroll
    for (int e = 0; e < EPL; ++e)
      if (e0 + e < D) merge_acc[(warp * ROWS + r) * DMAX + e0 + e] = acc[r][e];
  }
  __syncthreads();

  const int64_t rows_total = static_cast<int64_t>(a.tokens) * a.heads;
  for (int i = threadIdx.x; i < nrows * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    const int rho = r0 + r, t = rho / G, g = rho % G;
    const int64_t orow = static_cast<int64_t>(t) * a.heads + kvh * G + g;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) mx = fmaxf(mx, merge_m[w * ROWS + r]);
    float sum = 0.0f, o = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < WARPS; ++w) {
        const float mw = merge_m[w * ROWS + r];
        if (mw == -INFINITY) continue;
        const float wt = expf(mw - mx);
        sum = fmaf(merge_l[w * ROWS + r], wt, sum);
        o = fmaf(merge_acc[(w * ROWS + r) * DMAX + d], wt, o);
      }
    }
    if (a.splits == 1) {
      out[orow * D + d] = from_float<T>(o / sum);  // every row sees key 0: sum > 0
    } else {
      const int64_t prow = split * rows_total + orow;
      part_o[prow * D + d] = mx == -INFINITY ? 0.0f : o / sum;
      if (d == 0) part_lse[prow] = mx == -INFINITY ? -INFINITY : mx + logf(sum);
    }
  }
}

}  // namespace dotf::cuda
