// The Avx2Packed kernel: y = x W^T + b over fp32 or bf16 weight panels, fp32 arithmetic.
#include "ops/cpu/linear_avx2.h"

#include "core/check.h"
#include "core/memory.h"
#include "ops/cpu/linear_avx2_layout.h"
#include "ops/cpu/simd.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

namespace dotf::avx2 {

namespace {

// y[M, N] = x[M, K] W[N, K]^T + b for M <= kAvx2MaxM, fp32 accumulation.
//
// Layout. The weight is packed once into panels of 16 output columns, [ceil(N/16)][Kp][16] with K
// zero-padded to Kp (a multiple of 4): one k step of a panel is one 64-byte line (fp32) or half of
// one (bf16, widened to fp32 in registers: bf16 is fp32's top half).
//
// Micro-kernel: a 6 x 16 tile of y in 12 ymm registers; per k step, 2 weight loads and 2 FMAs per
// row of x (a broadcast); fp32 weights also have a 7 x 16 tile (kFloatRowBlock7 below). Weights come
// from DRAM once per call: for more rows than one block holds, the row blocks reuse each 64-step chunk
// (16 KB fp32) from L1. Bias is the tile's initial value.
//
// Prefetch. The first row block of a panel also prefetches the next panel into L2, one line per
// segment and k step. Without it the DRAM stream paused whenever the FMAs were the bottleneck (a
// 9-row call cost the 1-row call's time plus its arithmetic at peak, nothing overlapped); with it,
// minimum of 3 interleaved runs here, SmolLM2's LM head took 9.4 -> 5.9 ms at M = 9 and
// 5.5 -> 4.3 ms at M = 1 (fp32), 4.0 -> 2.1 ms at M = 1 (bf16) (bench/results/linear-prefetch). Into
// L1 (T0) it gained little or lost: a panel (36 KB at K = 576) does not fit beside the chunk in use.
//
// Batch invariant: every output is summed in the same order (bias, then per chunk k = 0.., segments
// 0..3 in turn) whatever M, the row block a row lands in, or the thread count, so a row of a verify
// batch (M = k+1) is bitwise the row a decode step (M = 1) computes. (A second accumulator set for
// small M would hide FMA latency but change the order; one set still streams at >= 16 B/cycle.)
constexpr int64_t kChunk = 64;    // k steps per segment per pass: a 16 KB fp32 chunk stays in L1 across row blocks
// fp32 weights and exactly 7 rows (a verify of 6 drafts): one 7-row block, so each chunk streams from
// DRAM while all rows use it. As 6 + 1 rows the second block re-reads the chunk from L1 and the DRAM
// stream idles meanwhile: a 7-row verify of SmolLM2-135M took 1.83-1.89 decode steps that way and
// 1.55-1.69 in one block (3 interleaved runs each, 25 repetitions, context 304).
constexpr int64_t kFloatRowBlock7 = 7;

#ifdef DOTF_HAVE_AVX2_KERNEL
using simd::load8;

// acc = x * (8 fp32 at w) + acc with w as the FMA's memory operand: no register holds it, which is
// what lets 7 rows x 16 columns of accumulators (14) plus w0 and a broadcast fit AVX2's 16 registers.
// The same fused multiply-add as _mm256_fmadd_ps, so the sums are bitwise those of the 6-row kernel.
DOTF_AVX2 inline void fmadd_from_memory(__m256 x, const float* w, __m256& acc) {
  asm("vfmadd231ps %[w], %[x], %[acc]" : [acc] "+x"(acc) : [x] "x"(x), [w] "m"(*reinterpret_cast<const __m256*>(w)));
}

// c[MB][16] (row stride ldc) += sum over the 4 segments s and k < kc of
//   x[s * xseg + k * ldx + i] * p[(s * q + k) * 16 + j];
// with Prefetch, also prefetches p + ahead along each segment into L2.
template <typename WT, int MB, bool Prefetch>
DOTF_AVX2 inline void avx2_micro(const WT* __restrict p, int64_t q, int64_t kc, const float* __restrict x, int64_t ldx,
                                 int64_t xseg, float* __restrict c, int64_t ldc, int64_t ahead) {
  // Named registers, not arrays: GCC keeps arrays of __m256 in registers but also stores them to the
  // stack on every iteration.
  __m256 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61;
#define DOTF_LOADC(i)                                                            \
  if constexpr (MB > i) {                                                        \
    a##i##0 = _mm256_loadu_ps(c + i * ldc);                                      \
    a##i##1 = _mm256_loadu_ps(c + i * ldc + 8);                                  \
  }
#define DOTF_FMA(i)                                                              \
  if constexpr (MB > i) {                                                        \
    const __m256 xv = _mm256_broadcast_ss(xk + i);                               \
    a##i##0 = _mm256_fmadd_ps(xv, w0, a##i##0);                                  \
    if constexpr (MB == 7) fmadd_from_memory(xv, ws + 8, a##i##1);  /* WT = float */ \
    else a##i##1 = _mm256_fmadd_ps(xv, w1, a##i##1);                             \
  }
#define DOTF_STEP(s)                                                             \
  {                                                                              \
    const WT* ws = p + ((s) * q + k) * kPanel;                                   \
    const float* xk = x + (s) * xseg + k * ldx;                                  \
    const __m256 w0 = load8(ws);                                                 \
    [[maybe_unused]] const __m256 w1 = MB == 7 ? w0 : load8(ws + 8);             \
    DOTF_FMA(0) DOTF_FMA(1) DOTF_FMA(2) DOTF_FMA(3) DOTF_FMA(4) DOTF_FMA(5) DOTF_FMA(6) \
    if constexpr (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(ws + ahead), _MM_HINT_T1); \
  }
#define DOTF_STOREC(i)                                                           \
  if constexpr (MB > i) {                                                        \
    _mm256_storeu_ps(c + i * ldc, a##i##0);                                      \
    _mm256_storeu_ps(c + i * ldc + 8, a##i##1);                                  \
  }
  DOTF_LOADC(0) DOTF_LOADC(1) DOTF_LOADC(2) DOTF_LOADC(3) DOTF_LOADC(4) DOTF_LOADC(5) DOTF_LOADC(6)
  for (int64_t k = 0; k < kc; ++k) {
    DOTF_STEP(0) DOTF_STEP(1) DOTF_STEP(2) DOTF_STEP(3)
  }
  DOTF_STOREC(0) DOTF_STOREC(1) DOTF_STOREC(2) DOTF_STOREC(3) DOTF_STOREC(4) DOTF_STOREC(5) DOTF_STOREC(6)
#undef DOTF_LOADC
#undef DOTF_FMA
#undef DOTF_STEP
#undef DOTF_STOREC
}

template <typename WT, bool Prefetch>
DOTF_AVX2 void avx2_micro_rows(int64_t mb, const WT* p, int64_t q, int64_t kc, const float* x, int64_t ldx, int64_t xseg,
                               float* c, int64_t ldc, int64_t ahead) {
  if constexpr (std::is_same_v<WT, float>) {
    if (mb == kFloatRowBlock7) return avx2_micro<WT, kFloatRowBlock7, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
  }
  switch (mb) {
    case 6: return avx2_micro<WT, 6, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
    case 5: return avx2_micro<WT, 5, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
    case 4: return avx2_micro<WT, 4, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
    case 3: return avx2_micro<WT, 3, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
    case 2: return avx2_micro<WT, 2, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
    default: return avx2_micro<WT, 1, Prefetch>(p, q, kc, x, ldx, xseg, c, ldc, ahead);
  }
}

// Panels [p_begin, p_end) of y = x W^T + bias. xs: x repacked as [4][q][M] with segment stride xseg;
// packed: [P][4 q][16]; y: [M, N] fp32.
template <typename WT>
DOTF_AVX2 void avx2_linear_panels(const float* xs, int64_t M, int64_t q, int64_t xseg, const WT* packed, int64_t N,
                                  const float* bias, float* y, int64_t p_begin, int64_t p_end) {
  alignas(32) float tail[kAvx2MaxM * kPanel];
  const int64_t block = std::is_same_v<WT, float> && M == kFloatRowBlock7 ? kFloatRowBlock7 : kRowBlock;
  const int64_t panel_elements = kSegments * q * kPanel;
  for (int64_t pi = p_begin; pi < p_end; ++pi) {
    const int64_t n0 = pi * kPanel, cols = std::min(kPanel, N - n0);
    const bool full = cols == kPanel;
    float* c = full ? y + n0 : tail;
    const int64_t ldc = full ? N : kPanel;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t j = 0; j < kPanel; ++j) c[m * ldc + j] = (bias && j < cols) ? bias[n0 + j] : 0.0f;
    }
    const WT* panel = packed + pi * panel_elements;
    for (int64_t k0 = 0; k0 < q; k0 += kChunk) {
      const int64_t kc = std::min(kChunk, q - k0);
      for (int64_t m0 = 0; m0 < M; m0 += block) {
        const bool prefetch = m0 == 0 && pi + 1 < p_end;
        (prefetch ? avx2_micro_rows<WT, true> : avx2_micro_rows<WT, false>)(
            std::min(block, M - m0), panel + k0 * kPanel, q, kc, xs + k0 * M + m0, M, xseg, c + m0 * ldc, ldc,
            panel_elements);
      }
    }
    if (!full) {
      for (int64_t m = 0; m < M; ++m) std::memcpy(y + m * N + n0, tail + m * kPanel, cols * sizeof(float));
    }
  }
}

#endif  // DOTF_HAVE_AVX2_KERNEL

// x [M, K] fp32 -> the segment layout with one k per step, zero past K; returns it with its stride.
std::pair<at::Tensor, int64_t> repack_segments(const at::Tensor& xf, int64_t q) {
  const int64_t M = xf.size(0), K = xf.size(1);
  at::Tensor xs = at::empty({kSegments * segment_stride(q, M)}, xf.options());
  const float* src = xf.data_ptr<float>();
  fill_segments(xs.data_ptr<float>(), M, q, [&](int64_t m, int64_t kk) { return kk < K ? src[m * K + kk] : 0.0f; });
  return {xs, segment_stride(q, M)};
}

}  // namespace

// [N, K] -> [ceil(N/16), Kp, 16] with Kp = K rounded up to a multiple of 4, zero-padded, same dtype.
at::Tensor pack_panels(const at::Tensor& w) {
  const at::Tensor padded = pad_for_panels(w, kSegments);
  const int64_t P = padded.size(0) / kPanel, Kp = padded.size(1);
  // [P, 16, Kp] -> [P, Kp, 16], on huge pages: every decode step streams it (core/memory.h)
  at::Tensor panels = empty_on_huge_pages({P, Kp, kPanel}, padded.options());
  panels.copy_(padded.view({P, kPanel, Kp}).transpose(1, 2));
  return panels;
}

namespace {

// Panels panel_at(i) for i in [0, count) of y = x W^T + bias into y ([M, N] fp32), in parallel.
template <typename PanelAt>
void run_panels(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias, int64_t N,
                float* y, int64_t count, PanelAt panel_at) {
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor xf = x.to(at::kFloat).contiguous();  // no copy for a contiguous fp32 x
  const int64_t M = xf.size(0), Kp = packed.size(1), q = Kp / kSegments;
  const auto [xs, xseg] = repack_segments(xf, q);
  const float* xp = xs.data_ptr<float>();
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  auto over = [&](auto* wp) {
    at::parallel_for(0, count, panel_grain(Kp), [&](int64_t b, int64_t e) {
      // Consecutive panels go to the kernel as one range (its loop over panels).
      for (int64_t i = b; i < e;) {
        const int64_t first = panel_at(i);
        int64_t j = i + 1;
        while (j < e && panel_at(j) == first + (j - i)) ++j;
        avx2_linear_panels(xp, M, q, xseg, wp, N, bp, y, first, first + (j - i));
        i = j;
      }
    });
  };
  if (packed.scalar_type() == at::kFloat) over(packed.data_ptr<float>());
  else over(reinterpret_cast<const uint16_t*>(packed.data_ptr<at::BFloat16>()));
#else
  DOTF_CHECK(false, "linear path 'avx2' is not built for this architecture");
#endif
}

}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias, int64_t N) {
  at::Tensor y = at::empty({x.size(0), N}, x.options().dtype(at::kFloat));
  run_panels(x, packed, bias, N, y.data_ptr<float>(), packed.size(0), [](int64_t i) { return i; });
  return y;
}

void linear_panels(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias, int64_t N,
                   const std::vector<int64_t>& panels, at::Tensor& y) {
  DOTF_CHECK(y.is_contiguous() && y.scalar_type() == at::kFloat && y.dim() == 2 && y.size(0) == x.size(0) &&
                 y.size(1) == N,
             "linear_panels: y must be a contiguous float32 [", x.size(0), ", ", N, "] tensor, got ", y.sizes());
  for (const int64_t p : panels)
    DOTF_CHECK(p >= 0 && p < packed.size(0), "linear_panels: panel ", p, " is outside [0, ", packed.size(0), ")");
  const int64_t* list = panels.data();
  run_panels(x, packed, bias, N, y.data_ptr<float>(), static_cast<int64_t>(panels.size()),
             [list](int64_t i) { return list[i]; });
}

}  // namespace dotf::avx2
