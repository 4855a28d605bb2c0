#pragma once
// The split kernel of CUDA causal grouped-query attention over the KV cache, flash-decoding style;
// ops/cuda/attention.cu merges the splits and launches. Included by attention.cu only.
//
// A block owns one KV head, a tile of up to kRows query rows of that head's group (row = t*G + g
// for G = H / KVH query heads per KV head, so a KV row read serves every query head that uses it)
// and one split of the keys. Its warps take interleaved 32-key tiles. A warp first stages its tile's
// K and V rows in shared memory, then scores the tile (lane = key, a padded row stride keeps the
// lanes' K reads conflict-free), runs an online softmax in float32 per row, and accumulates P V
// (each lane owns D/32 output elements). The warps' states are merged in shared memory at the end.
// With one split the block writes the output; with several (long caches and few blocks) it writes
// a normalised partial output and its log-sum-exp, and a combine kernel merges the splits
// (attention_block.cuh).
// Query t sits at position start + t and sees keys [0, start + t].
//
// Why the staging is asynchronous: at decode a block has one or two tiles per warp, so the kernel's
// time is the latency of its loads, not their bytes. Rows of 16-byte multiples (every head_dim of
// the supported models) are staged with cp.async (sm_80+): a lane issues all its 16-byte copies of
// the tile's K and V at once and waits once, instead of one load's latency after another (the
// previous, word-by-word version took ~40 us per layer at 512 keys on an H100, ~20x its bytes; this
// one ~11 us, bench/results/gpu-h100). Other head_dims take word-sized copies through registers.
#include "ops/cuda/kernels.h"

#include "ops/cuda/attention_block.cuh"
#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = kAttnWarps * kWarpSize;
constexpr int kRows = 8;                            // query rows per block
constexpr int kTileKeys = kWarpSize;                // keys per warp tile (one per lane)
constexpr int kBlockKeys = kAttnWarps * kTileKeys;  // keys per block step; split chunks are multiples
constexpr int64_t kMinChunk = kBlockKeys;           // fewest keys per split: one tile per warp

// Shared-memory row strides of a warp's staged tile, in bytes. VEC: K rows padded by 16 bytes, so
// that the 8 lanes of a 16-byte-load phase hit 8 distinct bank groups; V rows unpadded (a warp reads
// one V row at a time, lanes side by side). !VEC: K as 32-bit words padded by one word; V not staged.
template <typename T, int DMAX, bool VEC>
constexpr int k_stage_stride() {
  return VEC ? DMAX * static_cast<int>(sizeof(T)) + 16 : DMAX * static_cast<int>(sizeof(T)) + 4;
}
template <typename T, int DMAX, bool VEC>
constexpr int v_stage_stride() {
  return VEC ? DMAX * static_cast<int>(sizeof(T)) : 0;
}

// Dynamic shared memory of the split kernel, in bytes.
template <typename T, int DMAX, bool VEC>
constexpr size_t attention_smem_bytes() {
  constexpr size_t q_tile = sizeof(float) * kRows * DMAX;
  constexpr size_t stage =
      static_cast<size_t>(kAttnWarps) * kTileKeys * (k_stage_stride<T, DMAX, VEC>() + v_stage_stride<T, DMAX, VEC>());
  constexpr size_t merge = sizeof(float) * kAttnWarps * kRows * (DMAX + 2);
  return q_tile + (stage > merge ? stage : merge);
}

// 16-byte copy global -> shared that does not wait for its data (cp.async, sm_80+); older
// architectures copy through a register. Completed by cp_async_wait_all().
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
#else
  *reinterpret_cast<uint4*>(smem) = *reinterpret_cast<const uint4*>(gmem);
#endif
}
// Waits for this thread's cp.async copies; the caller's __syncwarp() then publishes them to the warp.
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// dot[r] += q_tile[r][offset, offset + N) . kf for the tile's first nrows rows (nrows is warp-uniform):
// the N key elements a lane unpacked serve every query row.
template <int N>
__device__ __forceinline__ void add_to_row_dots(float (&dot)[kRows], const float (&kf)[N], const float* q_tile,
                                                int D, int offset, int nrows) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= nrows) break;
    const float* qc = q_tile + r * D + offset;
#pragma unroll
    for (int e = 0; e < N; ++e) dot[r] = fmaf(qc[e], kf[e], dot[r]);
  }
}

// q: [T, H, D]; k, v: [capacity, KVH, D] (only rows < start + T are read)
// out: [T, H * D] when splits == 1; else part_o: [splits, T * H, D] float32, part_lse: [splits, T * H]
// grid: (ceil(T * G / kRows), KVH, splits), block: kAttnThreads
// DMAX: head_dim bound (64 or 128). VEC: head_dim * sizeof(T) is a multiple of 16 and the caches
// are 16-byte aligned (K and V staged by 16-byte asynchronous copies, any such head_dim <= DMAX).
// !VEC: any even head_dim <= DMAX, 4-byte aligned rows (K staged word by word, V read from global).
template <typename T, int DMAX, bool VEC>
__global__ void __launch_bounds__(kAttnThreads)
attention_split_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                       float* __restrict__ part_o, float* __restrict__ part_lse, AttentionArgs a) {
  constexpr int kEpl = DMAX / kWarpSize;  // output elements per lane
  constexpr int kWordElems = Word<T>::kElems;
  constexpr int kVecElems = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector
  constexpr int kKStride = k_stage_stride<T, DMAX, VEC>();
  constexpr int kVStride = v_stage_stride<T, DMAX, VEC>();
  const BlockTile bt = block_tile<kRows>(a);
  const auto [D, G, kvh, r0, nrows, split, warp, lane, start] = bt;

  // Keys of this block: its split, cut at the last visible key of its last row.
  const int t_last = (r0 + nrows - 1) / G;
  const int64_t s_begin = static_cast<int64_t>(split) * a.chunk;
  const int64_t s_end = min_of<int64_t>(s_begin + a.chunk, start + t_last + 1);

  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* q_tile = reinterpret_cast<float*>(smem_raw);                                      // [kRows][D]
  unsigned char* stage = smem_raw + sizeof(float) * kRows * DMAX;                          // per warp:
  unsigned char* my_k = stage + warp * kTileKeys * (kKStride + kVStride);                  // [32][kKStride]
  unsigned char* my_v = my_k + kTileKeys * kKStride;                                       // [32][kVStride]
  [[maybe_unused]] const int k_words = D * static_cast<int>(sizeof(T)) / 4;  // !VEC
  [[maybe_unused]] const int row_vecs = D / kVecElems;                      // VEC

  // The tile's query rows, as float32: all loads issued before the first store (one latency).
  constexpr int kQPerThread = kRows * DMAX / kAttnThreads;
  float qv[kQPerThread];
#pragma unroll
  for (int it = 0; it < kQPerThread; ++it) {
    const int i = threadIdx.x + it * kAttnThreads;
    if (i < nrows * D) {
      const int r = i / D, d = i % D;
      const int rho = r0 + r, t = rho / G, g = rho % G;
      qv[it] = to_float(q[(static_cast<int64_t>(t) * a.heads + kvh * G + g) * D + d]);
    }
  }
#pragma unroll
  for (int it = 0; it < kQPerThread; ++it) {
    const int i = threadIdx.x + it * kAttnThreads;
    if (i < nrows * D) q_tile[i] = qv[it];  // = q_tile[r * D + d]
  }
  __syncthreads();

  float m[kRows], l[kRows], acc[kRows][kEpl];
  int64_t limit[kRows];  // last key row r may see; -1 for rows past the tile
  init_row_states(m, l, acc, limit, bt);

  const int64_t kv_row = static_cast<int64_t>(a.kv_heads) * D;
  const T* k_head = k + static_cast<int64_t>(kvh) * D;
  const T* v_head = v + static_cast<int64_t>(kvh) * D;
  const int e0 = lane * kEpl;
  // VEC: D is a multiple of kEpl, so a lane holds all of its kEpl output elements or none.
  [[maybe_unused]] const bool lane_has_output = e0 < D;

  for (int64_t tile = s_begin + warp * kTileKeys; tile < s_end; tile += kBlockKeys) {
    const int nk = static_cast<int>(min_of<int64_t>(kTileKeys, s_end - tile));

    // Stage the tile's rows [tile, tile + nk): only keys the block's last row may see are copied, so
    // a row cached past them (a rejected draft's, maybe non-finite) never enters shared memory; keys
    // staged but past an earlier row's position are skipped for that row below.
    if constexpr (VEC) {
      for (int i = lane; i < nk * row_vecs; i += kWarpSize) {
        const int j = i / row_vecs, c = i % row_vecs;
        const int64_t src = (tile + j) * kv_row + c * kVecElems;
        cp_async16(my_k + j * kKStride + c * 16, k_head + src);
        cp_async16(my_v + j * kVStride + c * 16, v_head + src);
      }
      cp_async_wait_all();
    } else {
      uint32_t* kw = reinterpret_cast<uint32_t*>(my_k);
      for (int i = lane; i < nk * k_words; i += kWarpSize) {
        const int j = i / k_words, w = i % k_words;
        kw[j * (kKStride / 4) + w] = reinterpret_cast<const uint32_t*>(k_head + (tile + j) * kv_row)[w];
      }
    }
    __syncwarp();

    // Scores (lane = key) of every row of the tile at once: each K vector is read from shared
    // memory once and serves all rows, whose dot products are independent FMA chains.
    const int64_t key = tile + lane;
    const unsigned char* kr = my_k + lane * kKStride;
    float dot[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) dot[r] = 0.0f;
    if (lane < nk) {
      if constexpr (VEC) {
#pragma unroll 2
        for (int c = 0; c < row_vecs; ++c) {
          const uint4 x = *reinterpret_cast<const uint4*>(kr + c * 16);
          const uint32_t words[4] = {x.x, x.y, x.z, x.w};
          float kf[kVecElems];
#pragma unroll
          for (int w = 0; w < 4; ++w) Word<T>::unpack(words[w], kf + w * kWordElems);
          add_to_row_dots(dot, kf, q_tile, D, c * kVecElems, nrows);
        }
      } else {
        const uint32_t* kw = reinterpret_cast<const uint32_t*>(kr);
#pragma unroll 4
        for (int w = 0; w < k_words; ++w) {
          float kf[kWordElems];
          Word<T>::unpack(kw[w], kf);
          add_to_row_dots(dot, kf, q_tile, D, w * kWordElems, nrows);
        }
      }
    }

    // Online-softmax update, the rows' warp reductions interleaved. A row with no visible key in
    // this tile keeps its state (its maximum stays -inf before its first visible key: alpha = 1).
    float s[kRows], tile_max[kRows], p[kRows], psum[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bool visible = lane < nk && key <= limit[r];  // limit = -1 past nrows
      s[r] = visible ? dot[r] * a.scale : -INFINITY;
      tile_max[r] = s[r];
    }
#pragma unroll
    for (int o = kWarpSize / 2; o > 0; o >>= 1) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= nrows) break;
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(kFullMask, tile_max[r], o));
      }
    }
    float alpha[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float m_new = fmaxf(m[r], tile_max[r]);
      alpha[r] = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);  // 0 on the first visible tile
      p[r] = s[r] == -INFINITY ? 0.0f : expf(s[r] - m_new);
      psum[r] = p[r];
      m[r] = m_new;
    }
#pragma unroll
    for (int o = kWarpSize / 2; o > 0; o >>= 1) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= nrows) break;
        psum[r] += __shfl_xor_sync(kFullMask, psum[r], o);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      l[r] = l[r] * alpha[r] + psum[r];
#pragma unroll
      for (int e = 0; e < kEpl; ++e) acc[r][e] *= alpha[r];
    }

    // acc += P V: each lane its kEpl elements of a V row; p broadcast by shuffle.
#pragma unroll 2
    for (int j = 0; j < nk; ++j) {
      float vf[kEpl];
      if constexpr (VEC) {
        if (lane_has_output) {
          const Vec<T, kEpl> x = load_vec<T, kEpl>(reinterpret_cast<const T*>(my_v + j * kVStride) + e0);
#pragma unroll
          for (int e = 0; e < kEpl; ++e) vf[e] = to_float(x.v[e]);
        } else {
#pragma unroll
          for (int e = 0; e < kEpl; ++e) vf[e] = 0.0f;
        }
      } else {
        const T* vr = v_head + (tile + j) * kv_row;
#pragma unroll
        for (int e = 0; e < kEpl; ++e) vf[e] = e0 + e < D ? to_float(vr[e0 + e]) : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= nrows) break;  // warp-uniform
        const float pj = __shfl_sync(kFullMask, p[r], j);
        // Keys past row r's position weigh 0, but 0 * NaN is NaN: a non-finite V cached for a later
        // (rejected draft) position must not reach row r, so such keys are skipped, not weighted 0.
        if (tile + j <= limit[r]) {
#pragma unroll
          for (int e = 0; e < kEpl; ++e) acc[r][e] = fmaf(pj, vf[e], acc[r][e]);
        }
      }
    }
    __syncwarp();  // the next tile overwrites this warp's stage
  }

  // Merge the warps' (m, l, acc) per row; the staging area is reused.
  __syncthreads();
  float* merge_m = reinterpret_cast<float*>(stage);       // [warps][kRows]
  float* merge_l = merge_m + kAttnWarps * kRows;          // [warps][kRows]
  float* merge_acc = merge_l + kAttnWarps * kRows;        // [warps][kRows][DMAX]
  merge_warps_and_write<T, kRows, kAttnWarps, DMAX, kEpl>(merge_m, merge_l, merge_acc, m, l, acc, nrows, r0, G, kvh,
                                                           split, a, out, part_o, part_lse);
}

}  // namespace dotf::cuda
