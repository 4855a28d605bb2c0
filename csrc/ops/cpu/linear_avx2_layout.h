#pragma once
// The panel and segment layout shared by the AVX2 linear kernels (fp32/bf16 in linear_avx2.cpp, int8
// in linear_avx2_int8.cpp). Included by those two files only.
//
// Panels. A weight is packed once into panels of kPanel = 16 output columns, K zero-padded; one k
// step of a panel holds the 16 columns' weights for that step (the exact byte layout per dtype is in
// each kernel file).
//
// Four streams. One core streams DRAM at ~10 GB/s from a single sequential stream but ~22 GB/s from
// four (measured here, AVX2 EPYC: the hardware prefetcher runs ahead per stream; software prefetch on
// one stream did not help; each kernel also prefetches the next panel, see the kernel files). So each
// panel is read as four K segments [s*Kp/4, (s+1)*Kp/4) advanced in lockstep, which is what brings
// M = 1 to MKL's sgemv speed. x is repacked per call into the same four
// segments, k-major ([4][Kp/4][M], the segments padded apart so they do not alias in L1), so the
// broadcasts of a k step for all rows share a line.
#include "ops/cpu/features.h"
#include "ops/cpu/linear_avx2.h"  // kPanel

#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>

namespace dotf::avx2 {

constexpr int64_t kSegments = 4;  // concurrent DRAM streams per panel
constexpr int64_t kRowBlock = 6;  // rows of x per micro-kernel call
// int8: pair steps per segment between int32 -> fp32 flushes of the accumulators (linear_avx2_int8.cpp:
// Overflow).
constexpr int64_t kInt8Chunk = 32;

// The layout the micro-kernels broadcast x from: [4][q][M], k-major, step kk = s * q + k of row m at
// s * xseg + k * M + m. The segments sit 16 elements further apart than their size so that
// power-of-two sizes do not map all four onto the same L1 sets.
inline int64_t segment_stride(int64_t q, int64_t M) { return q * M + 16; }

// dst (kSegments * segment_stride(q, M) elements) <- value(m, kk) for every row m and step kk < 4q.
template <typename T, typename Value>
void fill_segments(T* dst, int64_t M, int64_t q, Value value) {
  const int64_t xseg = segment_stride(q, M);
  for (int64_t s = 0; s < kSegments; ++s) {
    for (int64_t k = 0; k < q; ++k) {
      T* d = dst + s * xseg + k * M;
      for (int64_t m = 0; m < M; ++m) d[m] = value(m, s * q + k);
    }
  }
}

// w: [N, K] zero-padded to [ceil(N/16) * 16, Kp], Kp = K rounded up to k_multiple (w itself if no
// padding is needed).
inline at::Tensor pad_for_panels(const at::Tensor& w, int64_t k_multiple) {
  const int64_t N = w.size(0), K = w.size(1), P = (N + kPanel - 1) / kPanel;
  const int64_t Kp = (K + k_multiple - 1) / k_multiple * k_multiple;
  if (P * kPanel == N && Kp == K) return w;
  at::Tensor padded = at::zeros({P * kPanel, Kp}, w.options());
  padded.narrow(0, 0, N).narrow(1, 0, K).copy_(w);
  return padded;
}

#ifdef DOTF_HAVE_AVX2_KERNEL
// The int8 kernel's panels [p_begin, p_end) (linear_int8_kernel.h), one build per instruction set
// (declared with the target attribute it is defined with).
#define DOTF_DECLARE_INT8_PANELS(ns, target)                                                               \
  namespace ns {                                                                                           \
  target void int8_linear_panels(const int32_t* xs, const float* sx, int64_t M, int64_t q2, int64_t xseg, \
                                 const int8_t* packed, const float* sw, const float* bias, int64_t N,     \
                                 float* y, int64_t ldy, int64_t p_begin, int64_t p_end);                  \
  }
DOTF_DECLARE_INT8_PANELS(int8_avx2, DOTF_AVX2)
DOTF_DECLARE_INT8_PANELS(int8_vnni, DOTF_AVX512_VNNI)
#undef DOTF_DECLARE_INT8_PANELS
#endif

// Panels per parallel task: enough weight per task that thread start-up is paid back (>= 64 K weights).
inline int64_t panel_grain(int64_t Kp) { return std::max<int64_t>(1, (int64_t(1) << 16) / (Kp * kPanel)); }

}  // namespace dotf::avx2
