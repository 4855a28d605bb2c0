// CUDA draws of the sampling op (ops/sample.h): the inverse-CDF draw of sample_rows and the speculative
// sampling acceptance test of speculative_accept, one block of kThreads per row. The warp that makes the
// rows is in ops/cuda/sample_warp.cu; the CPU reference (ops/sample.cpp) is the spec. The acceptance test
// is the CPU's arithmetic exactly (float64 compares of the same float32 values); a draw sums the row in
// another order than the CPU, so a uniform within rounding of a CDF boundary may pick the neighbour token.
//   draw: the first token whose cumulative weight exceeds u * total. Each warp owns a contiguous segment
//     and scans it in tiles of 32 (warp scans in double); the warp totals are added in warp order, and
//     the one warp whose segment holds the crossing walks it again with the same sums.
//   accept: one block; thread 0 runs the sequential test over the k drafts, then the block draws the
//     replacement from max(0, p - q) (p without the draft for a lookup draft; p itself when p == q leaves
//     no residual mass) or the bonus token from p.
// Nothing is read back to the host: a NaN row or a draft outside the vocabulary gives token -1, which the
// caller reports (SamplingAcceptance raises on it).
#include "ops/cuda/kernels.h"

#include "ops/cuda/sample_block.cuh"

namespace dotf::cuda {

namespace {

using namespace sampling;  // NOLINT(google-build-using-namespace): the block primitives of these kernels

// block_draw's results besides a token id.
constexpr int64_t kNoWeight = -1;  // no positive weight in the row
constexpr int64_t kNaNRow = -2;    // a NaN weight in the row

// The first index i in [0, n) whose cumulative weight (in index order, weights <= 0 counting as 0) exceeds
// u * total; the last positive-weight index when rounding leaves none; kNoWeight when no weight is
// positive; kNaNRow when a weight is NaN. weight(i) -> double. Contains __syncthreads(): call from every
// thread.
template <typename Weight>
__device__ int64_t block_draw(int64_t n, double u, Weight weight) {
  __shared__ double warp_total[kWarps];
  __shared__ int64_t picked;
  const int lane = lane_id(), warp = warp_id();
  const int64_t seg = ceil_div(n, kWarps);
  const int64_t seg_begin = min_of<int64_t>(n, warp * seg), seg_end = min_of<int64_t>(n, seg_begin + seg);

  // The warp's segment in tiles of 32: a warp scan per tile, the tile totals added in order.
  double running = 0;
  int64_t last = -1;
  bool nan = false;
  for (int64_t base = seg_begin; base < seg_end; base += kWarpSize) {  // warp-uniform trip count
    const int64_t i = base + lane;
    double wi = 0;
    if (i < seg_end) {
      const double raw = weight(i);
      nan |= isnan(raw);
      if (raw > 0) {
        wi = raw;
        last = i;
      }
    }
    running += __shfl_sync(kFullMask, warp_inclusive_sum(wi), kWarpSize - 1);
  }
  if (__syncthreads_or(nan)) return kNaNRow;
  if (lane == 0) warp_total[warp] = running;
  __syncthreads();
  double before = 0, total = 0;  // before: the same partial sum of `total` that precedes this warp
  for (int w = 0; w < kWarps; ++w) {
    if (w == warp) before = total;
    total += warp_total[w];
  }
  const double target = u * total;
  const int first = block_reduce(running > 0 && before + running > target ? warp : kWarps, Min{});
  if (first == kWarps) return block_reduce(last, Max{});  // kNoWeight (-1) when no weight is positive

  if (warp == first) {  // walks its segment again with the same sums, up to the crossing
    double run = 0;
    int64_t found = -1;
    for (int64_t base = seg_begin; base < seg_end; base += kWarpSize) {
      const int64_t i = base + lane;
      double wi = 0;
      if (i < seg_end) {
        const double raw = weight(i);
        wi = raw > 0 ? raw : 0;
      }
      const double incl = warp_inclusive_sum(wi);
      const unsigned hit = __ballot_sync(kFullMask, wi > 0 && before + (run + incl) > target);
      if (hit != 0) {
        found = base + __ffs(hit) - 1;
        break;
      }
      run += __shfl_sync(kFullMask, incl, kWarpSize - 1);
    }
    // found < 0 cannot happen (the segment's own total crossed); its last positive index stands in.
#pragma unroll
    for (int o = kWarpSize / 2; o > 0; o >>= 1) last = max_of<int64_t>(last, __shfl_xor_sync(kFullMask, last, o));
    if (lane == 0) picked = found >= 0 ? found : last;
  }
  __syncthreads();
  const int64_t id = picked;
  __syncthreads();  // `picked` may be reused by the next call
  return id;
}

// probs: [rows, vocab] float32 weights; uniforms: [rows]; ids: [rows]. grid: rows; block: kThreads.
__global__ void __launch_bounds__(kThreads)
sample_rows_kernel(const float* __restrict__ probs, const double* __restrict__ uniforms, int64_t vocab,
                   int64_t* __restrict__ ids) {
  const float* p = probs + static_cast<int64_t>(blockIdx.x) * vocab;
  const int64_t id = block_draw(vocab, uniforms[blockIdx.x], [&](int64_t i) { return static_cast<double>(p[i]); });
  if (threadIdx.x == 0) ids[blockIdx.x] = id >= 0 ? id : -1;
}

// p: [k + 1, vocab]; q: [k, vocab] (nullptr when k == 0); drafts, lookup: [k]; uniforms: [k + 1];
// out: [2]; ratios: [k]. grid: 1; block: kThreads.
__global__ void __launch_bounds__(kThreads)
speculative_accept_kernel(const float* __restrict__ p, const float* __restrict__ q, const int64_t* __restrict__ drafts,
                          const bool* __restrict__ lookup, const double* __restrict__ uniforms, int64_t k,
                          int64_t vocab, int64_t* __restrict__ out, double* __restrict__ ratios) {
  __shared__ int64_t s_accepted;
  __shared__ bool s_bad_draft;
  if (threadIdx.x == 0) {  // the test is sequential: draft i is reached only when i - 1 was kept
    int64_t i = 0;
    bool bad_draft = false;
    for (; i < k; ++i) {
      const int64_t x = drafts[i];
      if (x < 0 || x >= vocab) {
        bad_draft = true;
        break;
      }
      const double px = p[i * vocab + x], qx = lookup[i] ? 1.0 : static_cast<double>(q[i * vocab + x]);
      ratios[i] = qx <= px ? 1.0 : px / qx;  // min(1, p / q); NaN for a NaN row
      if (!(uniforms[i] * qx < px)) break;   // rejected: u_i >= p(x) / q(x)
    }
    s_accepted = i;
    s_bad_draft = bad_draft;
  }
  __syncthreads();
  const int64_t i = s_accepted;
  const bool bad_draft = s_bad_draft;
  // NaN past the drafts tested (a draft outside the vocabulary is not tested).
  for (int64_t j = (i < k && !bad_draft ? i + 1 : i) + threadIdx.x; j < k; j += kThreads) ratios[j] = NAN;
  if (bad_draft) {
    if (threadIdx.x == 0) {
      out[0] = i;
      out[1] = -1;
    }
    return;
  }

  const float* prow = p + i * vocab;
  const double u = uniforms[k];
  const auto p_weight = [&](int64_t y) { return static_cast<double>(prow[y]); };
  int64_t next;
  if (i == k) {
    next = block_draw(vocab, u, p_weight);
  } else {
    const int64_t x = drafts[i];
    const float* qrow = lookup[i] ? nullptr : q + i * vocab;
    next = block_draw(vocab, u, [&](int64_t y) {  // max(0, p - q): block_draw takes weights <= 0 as 0
      const double qy = qrow ? static_cast<double>(qrow[y]) : (y == x ? 1.0 : 0.0);
      return static_cast<double>(prow[y]) - qy;
    });
    // p == q up to rounding leaves no residual mass: the target row itself is the distribution left.
    if (next == kNoWeight) next = block_draw(vocab, u, p_weight);
  }
  if (threadIdx.x == 0) {
    out[0] = i;
    out[1] = next >= 0 ? next : -1;
  }
}

}  // namespace

void launch_sample_rows(const float* probs, const double* uniforms, int64_t rows, int64_t vocab, int64_t* ids,
                        cudaStream_t stream) {
  if (rows == 0) return;
  sample_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(probs, uniforms, vocab, ids);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_speculative_accept(const float* p, const float* q, const int64_t* drafts, const bool* lookup,
                               const double* uniforms, int64_t k, int64_t vocab, int64_t* out, double* ratios,
                               cudaStream_t stream) {
  speculative_accept_kernel<<<1, kThreads, 0, stream>>>(p, q, drafts, lookup, uniforms, k, vocab, out, ratios);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace dotf::cuda
