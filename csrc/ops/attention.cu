// CUDA causal grouped-query attention over the KV cache, flash-decoding style.
//
// A block owns one KV head, a tile of up to kRows query rows of that head's group (row = t*G + g
// for G = H / KVH query heads per KV head, so a KV row read serves every query head that uses it)
// and one split of the keys. Its warps take interleaved 32-key tiles: a warp stages its tile of K
// in shared memory (one key per lane for the dot products, conflict-free thanks to a padded row
// stride), runs an online softmax in float32 per row, and accumulates P V reading V rows coalesced
// (each lane owns D/32 output elements). The warps' states are merged in shared memory at the end.
// With one split the block writes the output; with several (long caches and few blocks) it writes
// a normalised partial output and its log-sum-exp, and a combine kernel merges the splits.
// Query t sits at position start + t and sees keys [0, start + t].
#include "ops/attention.h"

#include "ops/cuda_utils.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace dotf {
namespace cuda {

constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = kAttnWarps * kWarpSize;
constexpr int kRows = 8;                            // query rows per block
constexpr int kTileKeys = kWarpSize;                // keys per warp tile (one per lane)
constexpr int kBlockKeys = kAttnWarps * kTileKeys;  // keys per block step; split chunks are multiples
constexpr int64_t kMinChunk = 256;                  // fewest keys per split

struct AttentionArgs {
  int tokens;        // T
  int heads;         // H
  int kv_heads;      // KVH
  int head_dim;      // D
  int64_t start;     // position of query 0 (an upper bound of it when device_start is set)
  const int64_t* device_start;  // when set, the position of query 0 is read here (CUDA graph replays)
  float scale;
  int64_t chunk;     // keys per split
  int splits;
};

// Dynamic shared memory of the split kernel, in bytes.
template <typename T, int DMAX>
constexpr size_t attention_smem_bytes() {
  constexpr size_t q_tile = sizeof(float) * kRows * DMAX;
  constexpr size_t k_stage = sizeof(uint32_t) * kAttnWarps * kTileKeys * (DMAX * sizeof(T) / 4 + 1);
  constexpr size_t merge = sizeof(float) * kAttnWarps * kRows * (DMAX + 2);
  return q_tile + (k_stage > merge ? k_stage : merge);
}

// q: [T, H, D]; k, v: [capacity, KVH, D] (only rows < start + T are read)
// out: [T, H * D] when splits == 1; else part_o: [splits, T * H, D] float32, part_lse: [splits, T * H]
// grid: (ceil(T * G / kRows), KVH, splits), block: kAttnThreads
// DMAX: head_dim bound (multiple of 32); EXACT: head_dim == DMAX, 16-byte aligned rows (vector loads).
// Generic (!EXACT): any even head_dim <= DMAX, 4-byte aligned rows.
template <typename T, int DMAX, bool EXACT>
__global__ void __launch_bounds__(kAttnThreads)
attention_split_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                       float* __restrict__ part_o, float* __restrict__ part_lse, AttentionArgs a) {
  constexpr int kEpl = DMAX / kWarpSize;  // output elements per lane
  constexpr int kWordElems = Word<T>::kElems;
  const int D = EXACT ? DMAX : a.head_dim;
  const int G = a.heads / a.kv_heads;
  const int R = a.tokens * G;
  const int kvh = blockIdx.y;
  const int r0 = blockIdx.x * kRows;
  const int nrows = min_of(kRows, R - r0);
  const int split = blockIdx.z;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  // The launch was sized for a.start; a graph replay's actual start may be smaller, which leaves the
  // splits past it empty (they report -inf log-sum-exp and weigh nothing in the combine).
  const int64_t start = a.device_start ? *a.device_start : a.start;

  // Keys of this block: its split, cut at the last visible key of its last row.
  const int t_last = (r0 + nrows - 1) / G;
  const int64_t s_begin = static_cast<int64_t>(split) * a.chunk;
  const int64_t s_end = min_of<int64_t>(s_begin + a.chunk, start + t_last + 1);

  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* q_tile = reinterpret_cast<float*>(smem_raw);                            // [kRows][D]
  uint32_t* k_stage = reinterpret_cast<uint32_t*>(q_tile + kRows * DMAX);       // [warps][32][k_stride]
  const int k_words = D * static_cast<int>(sizeof(T)) / 4;
  const int k_stride = k_words + 1;
  uint32_t* my_k = k_stage + warp * kTileKeys * k_stride;

  for (int i = threadIdx.x; i < nrows * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    const int rho = r0 + r, t = rho / G, g = rho % G;
    q_tile[r * D + d] = to_float(q[(static_cast<int64_t>(t) * a.heads + kvh * G + g) * D + d]);
  }
  __syncthreads();

  float m[kRows], l[kRows], acc[kRows][kEpl];
  int64_t limit[kRows];  // last key row r may see; -1 for rows past the tile
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    limit[r] = r < nrows ? start + (r0 + r) / G : -1;
#pragma unroll
    for (int e = 0; e < kEpl; ++e) acc[r][e] = 0.0f;
  }

  const int64_t kv_row = static_cast<int64_t>(a.kv_heads) * D;
  const T* k_head = k + static_cast<int64_t>(kvh) * D;
  const T* v_head = v + static_cast<int64_t>(kvh) * D;
  const int e0 = lane * kEpl;

  for (int64_t tile = s_begin + warp * kTileKeys; tile < s_end; tile += kBlockKeys) {
    const int nk = static_cast<int>(min_of<int64_t>(kTileKeys, s_end - tile));

    // Stage K rows [tile, tile + nk) as 32-bit words.
    if constexpr (EXACT) {
      constexpr int kVecsPerRow = DMAX * sizeof(T) / 16;
      constexpr int kElemsPerVec = 16 / sizeof(T);
      for (int i = lane; i < nk * kVecsPerRow; i += kWarpSize) {
        const int j = i / kVecsPerRow, c = i % kVecsPerRow;
        const uint4 x = *reinterpret_cast<const uint4*>(k_head + (tile + j) * kv_row + c * kElemsPerVec);
        uint32_t* dst = my_k + j * k_stride + c * 4;
        dst[0] = x.x;
        dst[1] = x.y;
        dst[2] = x.z;
        dst[3] = x.w;
      }
    } else {
      for (int i = lane; i < nk * k_words; i += kWarpSize) {
        const int j = i / k_words, w = i % k_words;
        my_k[j * k_stride + w] = reinterpret_cast<const uint32_t*>(k_head + (tile + j) * kv_row)[w];
      }
    }
    __syncwarp();

    // Scores (lane = key) and the online-softmax update, row by row.
    const int64_t key = tile + lane;
    float p[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      p[r] = 0.0f;
      if (tile > limit[r]) continue;  // warp-uniform: no key of this tile is visible to row r
      const bool visible = lane < nk && key <= limit[r];
      float s = -INFINITY;
      if (visible) {
        const float* qr = q_tile + r * D;
        const uint32_t* kr = my_k + lane * k_stride;
        float dot = 0.0f;
#pragma unroll 8
        for (int w = 0; w < k_words; ++w) {
          float kf[kWordElems];
          Word<T>::unpack(kr[w], kf);
#pragma unroll
          for (int e = 0; e < kWordElems; ++e) dot = fmaf(qr[w * kWordElems + e], kf[e], dot);
        }
        s = dot * a.scale;
      }
      // Lane 0's key (= tile <= limit[r]) is visible, so the tile maximum is finite for finite inputs.
      const float m_new = fmaxf(m[r], warp_max(s));
      const float alpha = expf(m[r] - m_new);  // 0 on the first visible tile (m = -inf)
      p[r] = visible ? expf(s - m_new) : 0.0f;
      l[r] = l[r] * alpha + warp_sum(p[r]);
      m[r] = m_new;
#pragma unroll
      for (int e = 0; e < kEpl; ++e) acc[r][e] *= alpha;
    }

    // acc += P V: V rows read coalesced, each lane its kEpl elements; p broadcast by shuffle.
#pragma unroll 2
    for (int j = 0; j < nk; ++j) {
      const T* vr = v_head + (tile + j) * kv_row;
      float vf[kEpl];
      if constexpr (EXACT) {
        const Vec<T, kEpl> x = load_vec<T, kEpl>(vr + e0);
#pragma unroll
        for (int e = 0; e < kEpl; ++e) vf[e] = to_float(x.v[e]);
      } else {
#pragma unroll
        for (int e = 0; e < kEpl; ++e) vf[e] = e0 + e < D ? to_float(vr[e0 + e]) : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float pj = __shfl_sync(kFullMask, p[r], j);
        // Keys past row r's position weigh 0, but 0 * NaN is NaN: a non-finite V cached for a later
        // (rejected draft) position must not reach row r, so such keys are skipped, not weighted 0.
        if (r < nrows && tile + j <= limit[r]) {
#pragma unroll
          for (int e = 0; e < kEpl; ++e) acc[r][e] = fmaf(pj, vf[e], acc[r][e]);
        }
      }
    }
    __syncwarp();  // the next tile overwrites my_k
  }

  // Merge the warps' (m, l, acc) per row; the K staging area is reused.
  __syncthreads();
  float* merge_m = reinterpret_cast<float*>(k_stage);     // [warps][kRows]
  float* merge_l = merge_m + kAttnWarps * kRows;          // [warps][kRows]
  float* merge_acc = merge_l + kAttnWarps * kRows;        // [warps][kRows][DMAX]
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= nrows) break;
    if (lane == 0) {
      merge_m[warp * kRows + r] = m[r];
      merge_l[warp * kRows + r] = l[r];
    }
#pragma unroll
    for (int e = 0; e < kEpl; ++e)
      if (e0 + e < D) merge_acc[(warp * kRows + r) * DMAX + e0 + e] = acc[r][e];
  }
  __syncthreads();

  const int64_t rows_total = static_cast<int64_t>(a.tokens) * a.heads;
  for (int i = threadIdx.x; i < nrows * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    const int rho = r0 + r, t = rho / G, g = rho % G;
    const int64_t orow = static_cast<int64_t>(t) * a.heads + kvh * G + g;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) mx = fmaxf(mx, merge_m[w * kRows + r]);
    float sum = 0.0f, o = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) {
        const float mw = merge_m[w * kRows + r];
        if (mw == -INFINITY) continue;
        const float wt = expf(mw - mx);
        sum = fmaf(merge_l[w * kRows + r], wt, sum);
        o = fmaf(merge_acc[(w * kRows + r) * DMAX + d], wt, o);
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

template <typename T, int DMAX, bool EXACT>
void launch_attention_split(const T* q, const T* k, const T* v, T* out, float* part_o, float* part_lse,
                            const AttentionArgs& a, int q_tiles, cudaStream_t stream) {
  constexpr size_t smem = attention_smem_bytes<T, DMAX>();
  auto kernel = attention_split_kernel<T, DMAX, EXACT>;
  if constexpr (smem > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(q_tiles), static_cast<unsigned>(a.kv_heads), static_cast<unsigned>(a.splits));
  kernel<<<grid, kAttnThreads, smem, stream>>>(q, k, v, out, part_o, part_lse, a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Picks the split count: enough blocks to fill the GPU twice over, at least kMinChunk keys each.
inline void choose_splits(AttentionArgs& a, int64_t blocks_per_split, int sm_count) {
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

}  // namespace cuda

at::Tensor attention_with_cache_cuda(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     int64_t start, double scale, const at::Tensor& device_start) {
  // Ranks, shapes and bounds are checked by attention_with_cache; devices, dtypes and limits here.
  DOTF_CHECK_SAME_DEVICE(k_cache, q_in, "k_cache");
  DOTF_CHECK_SAME_DEVICE(v_cache, q_in, "v_cache");
  DOTF_CHECK_SAME_DTYPE(k_cache, q_in, "k_cache");
  DOTF_CHECK_SAME_DTYPE(v_cache, q_in, "v_cache");
  DOTF_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "attention_with_cache: KV caches must be contiguous");
  const int64_t T = q_in.size(0), H = q_in.size(1), D = q_in.size(2), KVH = k_cache.size(1);
  DOTF_CHECK_ARG(D % 2 == 0 && D <= 128, "attention_with_cache on CUDA supports even head_dim <= 128, got ", D);
  DOTF_CHECK_ARG(T * H <= std::numeric_limits<int32_t>::max() && KVH <= 65535, "attention_with_cache: too many rows");
  const c10::cuda::CUDAGuard guard(q_in.device());
  at::Tensor q = q_in.contiguous();
  at::Tensor out = at::empty({T, H * D}, q.options());
  if (T == 0 || H == 0) return out;
  // The word-wise K staging needs 4-byte aligned rows (always true for allocator-made tensors).
  at::Tensor k = cuda::aligned_to(k_cache.data_ptr(), 4) ? k_cache : k_cache.clone();
  at::Tensor v = cuda::aligned_to(v_cache.data_ptr(), 4) ? v_cache : v_cache.clone();

  cuda::AttentionArgs a{};
  a.tokens = static_cast<int>(T);
  a.heads = static_cast<int>(H);
  a.kv_heads = static_cast<int>(KVH);
  a.head_dim = static_cast<int>(D);
  a.start = start;
  a.device_start = device_start.defined() ? device_start.data_ptr<int64_t>() : nullptr;
  a.scale = static_cast<float>(scale);
  const int q_tiles = static_cast<int>(cuda::ceil_div(T * (H / KVH), cuda::kRows));
  cuda::choose_splits(a, static_cast<int64_t>(q_tiles) * KVH,
                      at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  DOTF_CHECK_ARG(a.splits <= 65535, "attention_with_cache: cache too long for the split grid");

  at::Tensor part_o, part_lse;
  if (a.splits > 1) {
    part_o = at::empty({a.splits, T * H, D}, q.options().dtype(at::kFloat));
    part_lse = at::empty({a.splits, T * H}, q.options().dtype(at::kFloat));
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(q.scalar_type(), "attention_with_cache", [&](auto tag) {
    using T_ = decltype(tag);
    const T_* qp = q.data_ptr<T_>();
    const T_* kp = k.data_ptr<T_>();
    const T_* vp = v.data_ptr<T_>();
    T_* op = out.data_ptr<T_>();
    float* po = a.splits > 1 ? part_o.data_ptr<float>() : nullptr;
    float* pl = a.splits > 1 ? part_lse.data_ptr<float>() : nullptr;
    const bool aligned16 = cuda::aligned_to(kp, 16) && cuda::aligned_to(vp, 16);
    if (D == 128 && aligned16) {
      cuda::launch_attention_split<T_, 128, true>(qp, kp, vp, op, po, pl, a, q_tiles, stream);
    } else if (D == 64 && aligned16) {
      cuda::launch_attention_split<T_, 64, true>(qp, kp, vp, op, po, pl, a, q_tiles, stream);
    } else {
      cuda::launch_attention_split<T_, 128, false>(qp, kp, vp, op, po, pl, a, q_tiles, stream);
    }
    if (a.splits > 1) {
      const int threads = static_cast<int>(std::min<int64_t>(128, cuda::ceil_div(D, 32) * 32));
      cuda::attention_combine_kernel<T_><<<static_cast<unsigned>(T * H), threads, 0, stream>>>(
          po, pl, op, T * H, static_cast<int>(D), a.splits);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace dotf
