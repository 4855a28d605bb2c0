// CUDA warp of the sampling logits (ops/sample.h's warped_probabilities): transformers' temperature,
// top-k, top-p and min-p, then the softmax, one block per row, the row of weights kept in the output.
// The CPU reference (ops/sample.cpp) is the spec. Results agree with it up to rounding, not bit for bit:
// expf and the CPU's vector exp differ by an ulp or two, and the sums run in another order; a token whose
// fate those decide (its mass before it at the top-p target, its weight at min_p) may differ.
//   1. row max, count of finite logits, NaN/+inf check (block reductions). A bad row is written as NaN:
//      raising would need a host read; the draw from it returns -1, which the caller turns into the error.
//   2. top-k: the k-th largest logit (ties counted) by an exact MSB-first radix select (4 digits of 8 bits)
//      over order-preserving keys of the floats; tokens below it are removed.
//   3. exp((x - max) / T) into the output, the top token's weight being exactly 1 (so min-p's threshold
//      is min_p itself).
//   4. top-p: a second radix select, on the weights' bits with each token's weight as its mass, in fixed
//      point so that histograms of masses are exact integer atomics whatever their order: the cut value is
//      the largest weight whose tokens, together with the more likely ones, reach top_p of the total. Ties
//      at the cut are kept in token-id order while the mass before them is < top_p * total (a block-wide
//      count in vocabulary order ranks them), as the CPU's sort by (weight desc, id asc) does.
//   5. min-p zeroes weights < min_p; the kept weights are summed in double and 6. scaled by 1 / sum.
// Every step is deterministic (fixed-order reductions, integer atomics only): a seed reproduces a call.
#include "ops/cuda/kernels.h"

#include "ops/cuda/sample_block.cuh"

namespace dotf::cuda {

namespace {

using namespace sampling;  // NOLINT(google-build-using-namespace): the block primitives of this kernel

constexpr int kRadixBits = 8;
constexpr int kBins = 1 << kRadixBits;

// Where the CPU's vector exp returns 0 (exp(-87.3) is about the smallest normal float).
constexpr float kExpUnderflow = -87.3f;

// How many threads before this one (in thread order) have flag set; *total gets the block's count.
// Contains __syncthreads(): call from every thread.
__device__ uint32_t block_exclusive_count(bool flag, uint32_t* total) {
  __shared__ uint32_t warp_count[kWarps];
  const unsigned ballot = __ballot_sync(kFullMask, flag);
  if (lane_id() == 0) warp_count[warp_id()] = __popc(ballot);
  __syncthreads();
  uint32_t before = 0, all = 0;
  for (int w = 0; w < kWarps; ++w) {
    before += w < warp_id() ? warp_count[w] : 0;
    all += warp_count[w];
  }
  __syncthreads();  // `warp_count` is rewritten by the next call
  *total = all;
  return before + __popc(ballot & ((1u << lane_id()) - 1u));
}

// ---- radix select ------------------------------------------------------------------------------

// Order-preserving keys of floats (not NaN): a < b iff order_key(a) < order_key(b), except -0 < +0.
__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_order_key(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

struct RadixShared {
  unsigned long long mass[kBins];
  uint32_t count[kBins];
  int bin;                   // the digit chosen by the last pass, -1 for none
  unsigned long long above;  // mass of the keys above the chosen prefix
  unsigned long long at;     // mass of the chosen bin
  uint32_t at_count;         // elements in the chosen bin
};

struct RadixResult {
  bool found;                // false when the whole mass is below `need`
  uint32_t key;              // the selected key K
  unsigned long long above;  // mass of the elements whose key > K
  unsigned long long at;     // mass of the elements whose key == K
  uint32_t count;            // elements whose key == K
};

// Picks the highest bin b at which the mass of bins >= b, plus `above`, reaches `need` (need > above),
// from sh.mass (or sh.count when UNIT): warp 0 scans the bins from the top, 8 per lane.
template <bool UNIT>
__device__ void radix_choose_bin(RadixShared& sh, unsigned long long above, unsigned long long need) {
  if (warp_id() != 0) return;
  const int lane = lane_id();
  constexpr int kPerLane = kBins / kWarpSize;
  unsigned long long v[kPerLane], s = 0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int b = kBins - 1 - lane * kPerLane - j;
    v[j] = UNIT ? sh.count[b] : sh.mass[b];
    s += v[j];
  }
  const unsigned long long incl = warp_inclusive_sum(s);
  const unsigned long long rest = need - above;
  const unsigned hit = __ballot_sync(kFullMask, incl >= rest);
  if (hit == 0) {
    if (lane == 0) sh.bin = -1;
    return;
  }
  if (lane != __ffs(hit) - 1) return;
  unsigned long long cum = incl - s;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    if (cum + v[j] >= rest) {
      const int b = kBins - 1 - lane * kPerLane - j;
      sh.bin = b;
      sh.above = above + cum;
      sh.at = v[j];
      sh.at_count = sh.count[b];
      return;
    }
    cum += v[j];
  }
}

// Over the elements i in [0, n) for which item(i, key, mass) returns true, the largest key K such that the
// elements with key >= K weigh >= need in all (need >= 1): 32 / kRadixBits passes over the elements, each
// a histogram of the next digit among the keys that match the digits chosen so far. UNIT: every mass is 1
// (then K is the need-th largest key, ties counted), and a warp's equal digits share one atomic.
// Contains __syncthreads(): call from every thread.
template <bool UNIT, typename Item>
__device__ RadixResult radix_select(int64_t n, Item item, unsigned long long need, RadixShared& sh) {
  uint32_t prefix = 0, mask = 0;
  unsigned long long above = 0;
  RadixResult r{false, 0, 0, 0, 0};
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    for (int b = threadIdx.x; b < kBins; b += kThreads) {
      sh.mass[b] = 0;
      sh.count[b] = 0;
    }
    __syncthreads();
    for (int64_t base = 0; base < n; base += kThreads) {  // the same trip count in every thread
      const int64_t i = base + threadIdx.x;
      uint32_t key = 0;
      unsigned long long mass = 0;
      int bin = -1;
      if (i < n && item(i, key, mass) && (key & mask) == prefix) bin = static_cast<int>((key >> shift) & (kBins - 1));
      if constexpr (UNIT) {
        const unsigned peers = __match_any_sync(kFullMask, bin);
        if (bin >= 0 && lane_id() == __ffs(peers) - 1) atomicAdd(&sh.count[bin], static_cast<uint32_t>(__popc(peers)));
      } else if (bin >= 0) {
        atomicAdd(&sh.count[bin], 1u);
        atomicAdd(&sh.mass[bin], mass);
      }
    }
    __syncthreads();
    radix_choose_bin<UNIT>(sh, above, need);
    __syncthreads();
    if (sh.bin < 0) return r;  // block-uniform: only possible in the first pass
    prefix |= static_cast<uint32_t>(sh.bin) << shift;
    mask |= static_cast<uint32_t>(kBins - 1) << shift;
    above = sh.above;
    r.at = sh.at;
    r.count = sh.at_count;
  }
  r.found = true;
  r.key = prefix;
  r.above = above;
  __syncthreads();  // sh is read above; the next radix_select overwrites it
  return r;
}

// ---- warp --------------------------------------------------------------------------------------

// A weight in [0, 1] as a fixed-point integer, scale = 2^fixed_point_bits(n): a row's sum of n weights
// fits in 62 bits, and top-p's masses add exactly, in any order.
__device__ __forceinline__ unsigned long long to_fixed(float w, double scale) {
  return __double2ull_rn(static_cast<double>(w) * scale);
}
__device__ __forceinline__ int fixed_point_bits(int64_t n) {
  return 62 - (64 - __clzll(static_cast<long long>(n)));
}

// The top-p cut over the weights w [n] (fixed-point total z_fixed): the weight's bits `key` at the cut,
// and how many of the tokens of that weight stay (the first keep_ties, in token-id order).
struct TopPCut {
  bool found = false;
  uint32_t key = 0;
  unsigned long long count = 0, keep_ties = 0;
};

__device__ TopPCut top_p_cut(const float* w, int64_t n, double top_p, double scale, unsigned long long z_fixed,
                             RadixShared& radix) {
  const auto target = static_cast<unsigned long long>(ceil(top_p * static_cast<double>(z_fixed)));
  const unsigned long long need = min_of<unsigned long long>(z_fixed, max_of<unsigned long long>(1, target));
  const RadixResult r = radix_select<false>(
      n,
      [&](int64_t i, uint32_t& key, unsigned long long& mass) {
        const float e = w[i];
        key = __float_as_uint(e);  // e >= 0: the bits order as the values
        mass = to_fixed(e, scale);
        return mass > 0;
      },
      need, radix);
  TopPCut cut;
  if (!r.found) return cut;  // cannot happen: the top weight alone has mass
  cut.found = true;
  cut.key = r.key;
  cut.count = r.count;
  // Tie j (0-based, by id) stays iff above + j * each < need: the mass before it is below top_p * z.
  const unsigned long long each = r.at / r.count;
  cut.keep_ties = min_of<unsigned long long>(r.count, (need - r.above + each - 1) / each);
  return cut;
}

// logits: [rows, vocab]; probs: [rows, vocab] float32. grid: rows; block: kThreads.
template <typename T>
__global__ void __launch_bounds__(kThreads)
warped_probabilities_kernel(const T* __restrict__ logits, int64_t vocab, WarperArgs a, float* probs) {
  const T* x = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float* w = probs + static_cast<int64_t>(blockIdx.x) * vocab;  // written and read back: no __restrict__
  __shared__ RadixShared radix;

  // 1. max, finite count, validity
  float top = -INFINITY;
  int64_t finite = 0;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = to_float(x[i]);
    bad |= isnan(v) || v == INFINITY;
    finite += v > -INFINITY;
    top = fmaxf(top, v);
  }
  bad = __syncthreads_or(bad);
  finite = block_reduce(finite, Plus{});
  top = block_reduce(top, Max{});
  if (bad || finite == 0) {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) w[i] = NAN;
    return;
  }

  // 2. top-k threshold: the k-th largest logit
  float floor = -INFINITY;
  if (a.top_k > 0 && a.top_k < finite) {
    const RadixResult r = radix_select<true>(
        vocab,
        [&](int64_t i, uint32_t& key, unsigned long long& mass) {
          key = order_key(to_float(x[i]));
          mass = 1;
          return true;
        },
        static_cast<unsigned long long>(a.top_k), radix);
    floor = from_order_key(r.key);  // found: k <= the number of keys
  }

  // 3. unnormalized weights, each thread's own elements (steps 5 and 6 revisit them in the same thread)
  const bool top_p = a.top_p < 1.0, min_p = a.min_p > 0.0f;
  const double scale = ldexp(1.0, fixed_point_bits(vocab));
  double z = 0;
  unsigned long long z_fixed = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = to_float(x[i]);
    const float t = __fmul_rn(v - top, a.inv_temperature);
    // 0 below -87.3, as the CPU's vector exp (ops/cpu/simd.h) gives: the same tokens survive.
    const float e = v >= floor && t >= kExpUnderflow ? expf(t) : 0.0f;
    w[i] = e;
    z += e;
    if (top_p) z_fixed += to_fixed(e, scale);
  }

  // 4. top-p cut (the reduction's barrier also makes every thread's weights visible to the select)
  TopPCut cut;
  if (top_p) cut = top_p_cut(w, vocab, a.top_p, scale, block_reduce(z_fixed, Plus{}), radix);

  // 5. top-p and min-p masks, and the sum of what is left
  if (cut.found || min_p) {
    z = 0;
    const bool rank_ties = cut.found && cut.keep_ties < cut.count;  // block-uniform
    unsigned long long ties_before = 0;
    for (int64_t base = 0; base < vocab; base += kThreads) {  // the same trip count in every thread
      const int64_t i = base + threadIdx.x;
      const float e = i < vocab ? w[i] : 0.0f;
      const uint32_t key = __float_as_uint(e);
      bool keep = e > 0.0f && !(e < a.min_p) && (!cut.found || key >= cut.key);
      if (rank_ties) {
        const bool tie = e > 0.0f && key == cut.key;
        uint32_t ties_here = 0;
        const uint32_t rank = block_exclusive_count(tie, &ties_here);
        if (tie) keep = keep && ties_before + rank < cut.keep_ties;
        ties_before += ties_here;
      }
      if (i < vocab) {
        if (!keep && e != 0.0f) w[i] = 0.0f;
        z += keep ? e : 0.0f;
      }
    }
  }
  z = block_reduce(z, Plus{});

  // 6. normalize, as the CPU does: times the float of 1 / z
  const float factor = static_cast<float>(1.0 / z);
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) w[i] = __fmul_rn(w[i], factor);
}

}  // namespace

template <typename T>
void launch_warped_probabilities(const T* logits, int64_t rows, int64_t vocab, const WarperArgs& args, float* probs,
                                 cudaStream_t stream) {
  if (rows == 0) return;
  warped_probabilities_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, args, probs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DOTF_INSTANTIATE(T)                                                                                       \
  template void launch_warped_probabilities<T>(const T*, int64_t, int64_t, const WarperArgs&, float*, cudaStream_t);
DOTF_FOR_CUDA_FLOAT_TYPES(DOTF_INSTANTIATE)
#undef DOTF_INSTANTIATE

}  // namespace dotf::cuda
