// CUDA kernels of the draft's int8 KV mirror (ops/attention_int8.h): writing rows into it, and
// causal grouped-query attention over it, every key or a window (the first `sinks` keys and the last
// `window` ones of each query, ops/attention.h). The CPU kernel (ops/cpu/attention_avx2.cpp) and the
// float64 reference define the results; tests/python/ops/test_attention_int8_cuda.py compares.
//
// Attention layout, as the exact cache's split kernel (attention_split.cuh): a block owns one KV
// head, a tile of up to kRows query rows of its group and one split of the keys; its warps take
// interleaved 32-key tiles (lane = key for the scores, an online softmax per row, then each lane owns
// D/32 output elements of P V). What differs:
//   * keys are int8 rows of D bytes with one float scale each; a lane reads its key's row straight
//     from global memory in 16-byte vectors (a whole 64-byte row at D = 64), no staging: the mirror
//     is what the draft reads per step, a quarter of float32's bytes;
//   * the keys are a block's compact range: under a window, the keys no row of the tile sees (between
//     the sinks and the earliest row's window) are left out of the range before it is split, so a draft
//     step's cost follows the window, not the context. Each row still checks its own visibility.
#include "ops/cuda/kernels.h"

#include "ops/cuda/attention_block.cuh"
#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kRows = 8;                            // query rows per block
constexpr int kTileKeys = kWarpSize;                // keys per warp tile (one per lane)
constexpr int kBlockKeys = kWarps * kTileKeys;      // keys per block step; split chunks are multiples

// The compact key range of a block whose rows sit at positions [pos_lo, pos_hi]: index j is key j
// below the sinks and key j + gap from there; keys in [sinks, sinks + gap) are hidden from every row.
struct KeyRange {
  int64_t n, sinks, gap;
  __device__ int64_t key(int64_t j) const { return j < sinks ? j : j + gap; }
};

__device__ KeyRange key_range(int64_t pos_lo, int64_t pos_hi, int64_t window, int64_t sinks) {
  const int64_t gap = window > 0 ? max_of<int64_t>(0, pos_lo + 1 - sinks - window) : 0;
  return KeyRange{pos_hi + 1 - gap, gap > 0 ? sinks : pos_hi + 1, gap};
}

// Whether the query at `pos` sees `key` (ops/attention.h: causal; under a window, the sinks and the
// last `window` keys).
__device__ __forceinline__ bool sees(int64_t pos, int64_t key, int64_t window, int64_t sinks) {
  return key <= pos && (window == 0 || key < sinks || key > pos - window);
}

// q: [T, H, D]; k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity]
// out: [T, H * D] when splits == 1; else part_o: [splits, T * H, D] float32, part_lse: [splits, T * H]
// grid: (ceil(T * G / kRows), KVH, splits), block: kThreads. DMAX: 64 or 128 (D <= DMAX, D % 16 == 0).
template <typename T, int DMAX>
__global__ void __launch_bounds__(kThreads)
int8_attention_kernel(const T* __restrict__ q, const int8_t* __restrict__ k_q, const int8_t* __restrict__ v_q,
                      const float* __restrict__ k_scale, const float* __restrict__ v_scale, T* __restrict__ out,
                      float* __restrict__ part_o, float* __restrict__ part_lse, Int8AttentionArgs args) {
  constexpr int kEpl = DMAX / kWarpSize;  // output elements per lane (2 or 4 int8 values: one load)
  const AttentionArgs& a = args.base;
  const BlockTile bt = block_tile<kRows>(a);
  const auto [D, G, kvh, r0, nrows, split, warp, lane, start] = bt;
  const int64_t window = args.window, sinks = args.sinks;

  const KeyRange range = key_range(start + r0 / G, start + (r0 + nrows - 1) / G, window, sinks);
  const int64_t j_begin = static_cast<int64_t>(split) * a.chunk;
  const int64_t j_end = min_of<int64_t>(j_begin + a.chunk, range.n);

  __shared__ float q_tile[kRows * DMAX];
  __shared__ float merge_m[kWarps * kRows], merge_l[kWarps * kRows];
  __shared__ float merge_acc[kWarps * kRows * DMAX];
  for (int i = threadIdx.x; i < nrows * D; i += kThreads) {
    const int r = i / D, d = i % D;
    const int rho = r0 + r, t = rho / G, g = rho % G;
    q_tile[r * DMAX + d] = to_float(q[(static_cast<int64_t>(t) * a.heads + kvh * G + g) * D + d]);
  }
  __syncthreads();

  float m[kRows], l[kRows], acc[kRows][kEpl];
  int64_t pos[kRows];  // position of row r; -1 past the tile (sees nothing)
  init_row_states(m, l, acc, pos, bt);
  const int8_t* k_head = k_q + static_cast<int64_t>(kvh) * args.capacity * D;
  const int8_t* v_head = v_q + static_cast<int64_t>(kvh) * args.capacity * D;
  const float* ks_head = k_scale + static_cast<int64_t>(kvh) * args.capacity;
  const float* vs_head = v_scale + static_cast<int64_t>(kvh) * args.capacity;
  const int e0 = lane * kEpl;
  const bool lane_has_output = e0 < D;  // D is a multiple of 16, so a lane holds all kEpl elements or none

  for (int64_t tile = j_begin + warp * kTileKeys; tile < j_end; tile += kBlockKeys) {
    const int nk = static_cast<int>(min_of<int64_t>(kTileKeys, j_end - tile));
    const bool has_key = lane < nk;
    const int64_t key = has_key ? range.key(tile + lane) : 0;

    // Scores: the lane's key row, 16 int8 values per load, against every row of the tile.
    float dot[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) dot[r] = 0.0f;
    float ks = 0.0f, vs = 0.0f;
    if (has_key) {
      ks = ks_head[key];
      vs = vs_head[key];
      const int8_t* kr = k_head + key * D;
      for (int c = 0; c < D; c += 16) {
        const int4 x = *reinterpret_cast<const int4*>(kr + c);
        const int words[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int w = 0; w < 4; ++w) {
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            const float kf = static_cast<float>(static_cast<int8_t>(words[w] >> (8 * b)));
#pragma unroll
            for (int r = 0; r < kRows; ++r) {
              if (r >= nrows) break;
              dot[r] = fmaf(q_tile[r * DMAX + c + 4 * w + b], kf, dot[r]);
            }
          }
        }
      }
    }

    // Online softmax per row (as attention_split_kernel). A key a row does not see scores -inf.
    float s[kRows], tile_max[kRows], p[kRows], psum[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bool visible = has_key && sees(pos[r], key, window, sinks);
      s[r] = visible ? dot[r] * ks * a.scale : -INFINITY;
      tile_max[r] = warp_max(s[r]);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float m_new = fmaxf(m[r], tile_max[r]);
      const float alpha = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
      p[r] = s[r] == -INFINITY ? 0.0f : expf(s[r] - m_new);
      psum[r] = warp_sum(p[r]);
      m[r] = m_new;
      l[r] = l[r] * alpha + psum[r];
#pragma unroll
      for (int e = 0; e < kEpl; ++e) acc[r][e] *= alpha;
    }

    // acc += P V: key j's V row, kEpl int8 values per lane, times its scale.
    for (int j = 0; j < nk; ++j) {
      const int64_t key_j = __shfl_sync(kFullMask, key, j);
      const float vs_j = __shfl_sync(kFullMask, vs, j);
      float vf[kEpl];
      if (lane_has_output) {
        const int8_t* vr = v_head + key_j * D + e0;
        int packed;
        if constexpr (kEpl == 4) packed = *reinterpret_cast<const int*>(vr);
        else packed = static_cast<int>(*reinterpret_cast<const short*>(vr));
#pragma unroll
        for (int e = 0; e < kEpl; ++e) vf[e] = static_cast<float>(static_cast<int8_t>(packed >> (8 * e))) * vs_j;
      } else {
#pragma unroll
        for (int e = 0; e < kEpl; ++e) vf[e] = 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float pj = __shfl_sync(kFullMask, p[r], j);
        // Skipped, not weighted 0: a row cached past this row's position may be non-finite (0 * NaN).
        if (r < nrows && sees(pos[r], key_j, window, sinks)) {
#pragma unroll
          for (int e = 0; e < kEpl; ++e) acc[r][e] = fmaf(pj, vf[e], acc[r][e]);
        }
      }
    }
  }

  // Merge the warps' (m, l, acc) per row, then write the output or this split's partial one.
  merge_warps_and_write<T, kRows, kWarps, DMAX, kEpl>(merge_m, merge_l, merge_acc, m, l, acc, nrows, r0, G, kvh, split,
                                                     a, out, part_o, part_lse);
}

// grid: (count, KVH), block: 2 warps (K, V). Row `start + blockIdx.x` of KV head blockIdx.y.
template <typename T>
__global__ void quantize_kv_rows_kernel(const T* __restrict__ k, const T* __restrict__ v, int64_t kv_heads, int D,
                                        int64_t capacity, int64_t start, const int64_t* __restrict__ device_start,
                                        int8_t* __restrict__ k_q, int8_t* __restrict__ v_q,
                                        float* __restrict__ k_scale, float* __restrict__ v_scale) {
  const int64_t s = (device_start ? *device_start : start) + blockIdx.x;
  const int64_t h = blockIdx.y;
  const bool is_v = threadIdx.x >= kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const T* x = (is_v ? v : k) + (s * kv_heads + h) * D;
  int8_t* dst = (is_v ? v_q : k_q) + (h * capacity + s) * D;
  float amax = 0.0f, poison = 0.0f;  // poison: x * 0 is NaN for inf or NaN
  for (int d = lane; d < D; d += kWarpSize) {
    const float xv = to_float(x[d]);
    amax = fmaxf(amax, fabsf(xv));
    poison += xv * 0.0f;
  }
  amax = warp_max(amax);
  poison = warp_sum(poison);
  const bool finite = !isnan(poison);
  const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int d = lane; d < D; d += kWarpSize) {
    const float r = rintf(to_float(x[d]) * inv);  // round half to even, as the CPU's nearbyint
    dst[d] = finite ? static_cast<int8_t>(fminf(fmaxf(r, -127.0f), 127.0f)) : int8_t{0};
  }
  if (lane == 0) (is_v ? v_scale : k_scale)[h * capacity + s] = finite ? amax / 127.0f : NAN;
}

}  // namespace

void choose_int8_attention_splits(Int8AttentionArgs& args, int sm_count) {
  AttentionArgs& a = args.base;
  const int64_t tiles = ceil_div(static_cast<int64_t>(a.tokens) * (a.heads / a.kv_heads), kRows);
  const int64_t blocks_per_split = tiles * a.kv_heads;
  // The most keys one block's compact range holds: under a window, the sinks and the window of its
  // rows (which span at most `tokens` positions); else every key up to the last query.
  const int64_t all = a.start + a.tokens;
  const int64_t keys = args.window > 0 ? min_of<int64_t>(all, args.sinks + args.window + a.tokens) : all;
  int64_t splits = 1;
  const int64_t target = 2 * static_cast<int64_t>(sm_count);
  if (blocks_per_split < target && keys > kBlockKeys)
    splits = min_of<int64_t>(ceil_div(target, blocks_per_split), ceil_div(keys, kBlockKeys));
  const int64_t chunk = ceil_div(ceil_div(keys, splits), kBlockKeys) * kBlockKeys;
  a.chunk = chunk;
  a.splits = static_cast<int>(ceil_div(keys, chunk));
}

template <typename T>
void launch_int8_attention(const T* q, const int8_t* k_q, const int8_t* v_q, const float* k_scale,
                           const float* v_scale, T* out, float* part_o, float* part_lse, const Int8AttentionArgs& args,
                           cudaStream_t stream) {
  const AttentionArgs& a = args.base;
  const int64_t tiles = ceil_div(static_cast<int64_t>(a.tokens) * (a.heads / a.kv_heads), kRows);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(a.kv_heads), static_cast<unsigned>(a.splits));
  if (a.head_dim <= 64)
    int8_attention_kernel<T, 64><<<grid, kThreads, 0, stream>>>(q, k_q, v_q, k_scale, v_scale, out, part_o, part_lse,
                                                                 args);
  else
    int8_attention_kernel<T, 128><<<grid, kThreads, 0, stream>>>(q, k_q, v_q, k_scale, v_scale, out, part_o,
                                                                  part_lse, args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (a.splits > 1)
    launch_attention_combine(part_o, part_lse, out, static_cast<int64_t>(a.tokens) * a.heads, a.head_dim, a.splits,
                             stream);
}

template <typename T>
void launch_quantize_kv_rows(const T* k, const T* v, int64_t kv_heads, int head_dim, int64_t capacity, int64_t start,
                             const int64_t* device_start, int64_t count, int8_t* k_q, int8_t* v_q, float* k_scale,
                             float* v_scale, cudaStream_t stream) {
  if (count == 0 || kv_heads == 0) return;
  const dim3 grid(static_cast<unsigned>(count), static_cast<unsigned>(kv_heads));
  quantize_kv_rows_kernel<T><<<grid, 2 * kWarpSize, 0, stream>>>(k, v, kv_heads, head_dim, capacity, start,
                                                                 device_start, k_q, v_q, k_scale, v_scale);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DOTF_INSTANTIATE(T)                                                                                   \
  template void launch_int8_attention<T>(const T*, const int8_t*, const int8_t*, const float*, const float*, T*, \
                                         float*, float*, const Int8AttentionArgs&, cudaStream_t);             \
  template void launch_quantize_kv_rows<T>(const T*, const T*, int64_t, int, int64_t, int64_t, const int64_t*, \
                                           int64_t, int8_t*, int8_t*, float*, float*, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
