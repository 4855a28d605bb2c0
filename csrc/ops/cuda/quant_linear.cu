// CUDA weight-only quantized linear for small M (the draft's steps, lookup-checking passes):
// y = x (q * scale)^T + bias with int8 (per output channel) or int4 (groups along K) weights in
// QuantizedWeight's layout (ops/quant_linear.h).
//
// Decoding at batch 1..16 is bound by reading the weights, so the kernel streams each weight byte
// exactly once per pass, with 16-byte loads, and does everything else in registers:
//   - a block of kThreads threads owns kRowsPerBlock output channels and a range of K; thread t reads
//     16-byte chunks t, t + kThreads, ... of each of its rows (coalesced: a warp reads 512 contiguous
//     bytes per row), the next chunks issued before the current ones are used;
//   - a chunk (16 int8 or 32 int4 weights) is dequantized exactly with the 2^23 trick (the weight's
//     bits placed in a float's mantissa, one PRMT/LOP and one FADD per weight; the float unit, not the
//     slower int-to-float conversions) and multiplied by the matching x values (16-byte loads, L1/L2
//     hits: x is small and shared by every block), float32 sums; int4 sums are scaled per chunk (a
//     chunk never straddles a group), int8 sums once per channel at the end;
//   - the block's partial sums are reduced in shared memory (block_sum) in a fixed order.
// When N is small the grid also splits K (a.splits > 1): each split writes float32 partial sums and a
// second kernel adds them in split order, so results are deterministic (no atomics).
// Learned from llama.cpp's MMVQ (one pass over quantized rows, x shared), AWQ's GEMV and Marlin's
// fast dequantization (the magic-number float conversion); written for this layout.
#include "ops/cuda/kernels.h"

#include "ops/cuda/utils.cuh"

namespace dotf::cuda {

namespace {

constexpr int kThreads = 128;      // per block: 4 warps
constexpr int kRowsPerBlock = 2;   // output channels per block; each x load serves all of them
constexpr int kChunkBytes = 16;    // one vector load of weights

// One 16-byte chunk of a weight row decoded into floats (exact: |q| <= 127 fits the mantissa).
template <int Bits> struct Chunk;
template <> struct Chunk<8> {
  static constexpr int kInputs = 16;
  // Byte b (int8) -> b ^ 0x80 = b + 128 as the low byte of 0x4B0000xx = 2^23 + b + 128.
  __device__ __forceinline__ static void decode(const uint4& w, float* out) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t u = words[i] ^ 0x80808080u;
#pragma unroll
      for (int j = 0; j < 4; ++j) out[4 * i + j] = __uint_as_float(__byte_perm(u, 0x4B00u, 0x5440u | j)) - 8388736.0f;
    }
  }
};
template <> struct Chunk<4> {
  static constexpr int kInputs = 32;
  // Nibble n of word i is k = 8i + n (even k in the low nibble of a byte), stored as q + 8.
  __device__ __forceinline__ static void decode(const uint4& w, float* out) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int n = 0; n < 8; ++n)
        out[8 * i + n] = __uint_as_float(((words[i] >> (4 * n)) & 0xFu) | 0x4B000000u) - 8388616.0f;
    }
  }
};

// The 16 bytes at p, through the read-only path (each weight byte is read once).
__device__ __forceinline__ uint4 load_chunk(const uint8_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// Rows [0, M) of x (M <= MT) times rows n0.. of the weight over chunks [c_begin, c_end); grid:
// (ceil(N / kRowsPerBlock), splits). scale: float32 [N] (int8) or float16 [N, Kp / group] (int4).
// part: [splits, M, N] float32 when splits > 1 (bias added by the reduction), else nullptr.
template <typename T, int Bits, int MT>
__global__ void __launch_bounds__(kThreads)
    quant_linear_kernel(const T* __restrict__ x, const uint8_t* __restrict__ qw, const void* __restrict__ scale,
                        const T* __restrict__ bias, T* __restrict__ out, float* __restrict__ part, int M, int64_t N,
                        int64_t K, int64_t Kp, int chunks_per_group, int64_t chunks_per_split) {
  using C = Chunk<Bits>;
  constexpr int kIn = C::kInputs;                         // k per chunk
  constexpr int V = kChunkBytes / static_cast<int>(sizeof(T));  // x elements per 16-byte load
  constexpr int R = kRowsPerBlock;
  const int64_t row_bytes = Kp * Bits / 8, chunks = row_bytes / kChunkBytes;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * R;
  const int64_t c_begin = blockIdx.y * chunks_per_split, c_end = min_of(chunks, c_begin + chunks_per_split);
  const int64_t groups = Kp / (static_cast<int64_t>(chunks_per_group) * kIn);  // int4 scales per row
  const auto* half_scale = static_cast<const c10::Half*>(scale);

  float acc[MT * R] = {};  // acc[m * R + r]
  uint4 cur[R], next[R];
  auto load_rows = [&](int64_t c, uint4 (&w)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      w[r] = (c < c_end && n0 + r < N) ? load_chunk(qw + (n0 + r) * row_bytes + c * kChunkBytes) : make_uint4(0, 0, 0, 0);
  };
  int64_t c = c_begin + threadIdx.x;
  load_rows(c, cur);
  for (; c < c_end; c += kThreads) {
    load_rows(c + kThreads, next);  // in flight while this chunk is used
    float w[R][kIn];
    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      C::decode(cur[r], w[r]);
      if constexpr (Bits == 4) s[r] = n0 + r < N ? to_float(half_scale[(n0 + r) * groups + c / chunks_per_group]) : 0.0f;
    }
    const int64_t k0 = c * kIn;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m >= M) break;
      float dot[R] = {};
      const T* xm = x + m * K + k0;
#pragma unroll
      for (int u = 0; u < kIn / V; ++u) {
        if (k0 + u * V >= K) break;  // K is a multiple of V: a 16-byte unit is all in or all out
        const uint4 xv = *reinterpret_cast<const uint4*>(xm + u * V);
        const uint32_t words[4] = {xv.x, xv.y, xv.z, xv.w};
        float xf[V];
#pragma unroll
        for (int i = 0; i < 4; ++i) Word<T>::unpack(words[i], xf + i * Word<T>::kElems);
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int e = 0; e < V; ++e) dot[r] = fmaf(w[r][u * V + e], xf[e], dot[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) acc[m * R + r] = Bits == 4 ? fmaf(s[r], dot[r], acc[m * R + r]) : acc[m * R + r] + dot[r];
    }
#pragma unroll
    for (int r = 0; r < R; ++r) cur[r] = next[r];
  }

  block_sum(acc);
#pragma unroll
  for (int i = 0; i < MT * R; ++i) {
    const int m = i / R;
    const int64_t n = n0 + i % R;
    if (threadIdx.x != i || m >= M || n >= N) continue;
    float v = acc[i];
    if constexpr (Bits == 8) v *= static_cast<const float*>(scale)[n];
    if (part) {
      part[(blockIdx.y * static_cast<int64_t>(M) + m) * N + n] = v;
    } else {
      if (bias) v += to_float(bias[n]);
      out[m * N + n] = from_float<T>(v);
    }
  }
}

// out[m, n] = sum over splits of part[s, m, n] (in split order) + bias[n].
template <typename T>
__global__ void quant_reduce_kernel(const float* __restrict__ part, const T* __restrict__ bias, T* __restrict__ out,
                                    int64_t MN, int64_t N, int splits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < MN;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += part[s * MN + i];
    if (bias) v += to_float(bias[i % N]);
    out[i] = from_float<T>(v);
  }
}

int64_t chunks_per_row(const QuantLinearArgs& a) { return a.Kp * a.bits / 8 / kChunkBytes; }

// One pass over rows [0, M) of x, M <= kQuantMaxRows.
template <typename T, int Bits, int MT>
void launch_pass(const T* x, const void* qweight, const void* scale, const T* bias, T* out, float* part, int M,
                 const QuantLinearArgs& a, cudaStream_t stream) {
  const int64_t chunks = chunks_per_row(a), per_split = ceil_div(chunks, a.splits);
  const int chunks_per_group = Bits == 4 ? static_cast<int>(a.group / Chunk<4>::kInputs) : 1;
  const dim3 grid(static_cast<unsigned>(ceil_div(a.N, kRowsPerBlock)), static_cast<unsigned>(a.splits));
  quant_linear_kernel<T, Bits, MT><<<grid, kThreads, 0, stream>>>(
      x, static_cast<const uint8_t*>(qweight), scale, bias, out, a.splits > 1 ? part : nullptr, M, a.N, a.K, a.Kp,
      chunks_per_group, per_split);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (a.splits > 1) {
    const int64_t MN = M * a.N;
    const auto blocks = static_cast<unsigned>(min_of<int64_t>(ceil_div(MN, 256), 4096));
    quant_reduce_kernel<T><<<blocks, 256, 0, stream>>>(part, bias, out, MN, a.N, a.splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// Rows per pass rounded up to a compiled width (1, 2, 4, 8, 16): the sums of MT rows live in registers.
template <typename T, int Bits>
void launch_bits(const T* x, const void* qweight, const void* scale, const T* bias, T* out, float* part, int M,
                 const QuantLinearArgs& a, cudaStream_t stream) {
  if (M <= 1) return launch_pass<T, Bits, 1>(x, qweight, scale, bias, out, part, M, a, stream);
  if (M <= 2) return launch_pass<T, Bits, 2>(x, qweight, scale, bias, out, part, M, a, stream);
  if (M <= 4) return launch_pass<T, Bits, 4>(x, qweight, scale, bias, out, part, M, a, stream);
  if (M <= 8) return launch_pass<T, Bits, 8>(x, qweight, scale, bias, out, part, M, a, stream);
  return launch_pass<T, Bits, 16>(x, qweight, scale, bias, out, part, M, a, stream);
}

}  // namespace

void choose_quant_linear_splits(QuantLinearArgs& a, int sm_count) {
  // About 8 resident blocks per SM at these kernels' register use: below that many output blocks,
  // split K, keeping at least one chunk per thread per split.
  const int64_t blocks = ceil_div(a.N, kRowsPerBlock), target = 8 * static_cast<int64_t>(sm_count);
  const int64_t most = max_of<int64_t>(1, chunks_per_row(a) / kThreads);
  a.splits = static_cast<int>(min_of<int64_t>(max_of<int64_t>(1, ceil_div(target, blocks)), most));
}

template <typename T>
void launch_quant_linear(const T* x, const void* qweight, const void* scale, const T* bias, T* out, float* part,
                         const QuantLinearArgs& a, cudaStream_t stream) {
  for (int64_t m0 = 0; m0 < a.M; m0 += kQuantMaxRows) {  // the weights are streamed once per pass
    const int M = static_cast<int>(min_of<int64_t>(kQuantMaxRows, a.M - m0));
    const T* xm = x + m0 * a.K;
    T* om = out + m0 * a.N;
    if (a.bits == 8) launch_bits<T, 8>(xm, qweight, scale, bias, om, part, M, a, stream);
    else launch_bits<T, 4>(xm, qweight, scale, bias, om, part, M, a, stream);
  }
}

#define DOTF_INSTANTIATE(T)                                                                                  \
  template void launch_quant_linear<T>(const T*, const void*, const void*, const T*, T*, float*,           \
                                       const QuantLinearArgs&, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
