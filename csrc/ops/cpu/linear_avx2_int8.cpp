// The Int8Avx2 kernel: int8 weight panels times x rounded per row to int16, exact integer sums.
#include "ops/cpu/linear_avx2.h"

#include "core/check.h"
#include "core/memory.h"
#include "ops/cpu/linear_avx2_layout.h"
#include "ops/cpu/simd.h"
#include "ops/quant_linear.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#ifdef DOTF_HAVE_AVX2_KERNEL
#define DOTF_INT8_NS int8_avx2
#define DOTF_INT8_TARGET DOTF_AVX2
#define DOTF_INT8_ROWS 6
#define DOTF_INT8_MADD(a, w, x) _mm256_add_epi32((a), _mm256_madd_epi16((w), (x)))
#include "ops/cpu/linear_int8_kernel.h"
#endif

namespace dotf::avx2 {

namespace {

#ifdef DOTF_HAVE_AVX2_KERNEL
// Widening int8 to fp32 costs lane-crossing shuffles (vpmovsxbd) that capped a first fp32-FMA version
// at ~4 weights per cycle, slower than FBGEMM. So the products are integer: each row of x is
// quantized per call to int16 (scale max|x| / 32767, a relative step of 3e-5: negligible next to the
// int8 weights' 0.4%, unlike FBGEMM's 7-bit activations), and vpmaddwd multiplies 16 int16 weights
// by 16 int16 activations and adds pairs into 8 int32 sums. The int8 weights widen to int16 with one
// arithmetic shift per vector, thanks to the layout below.
//
// Layout. Panels of 16 output columns (linear_avx2_layout.h); one step of a panel covers a pair of k
// values in 32 bytes: byte 4j + 2kk + h holds w[col 8h + j][2 k2 + kk] (j < 8, kk, h in {0, 1}). Read
// as int16 lanes, v >> 8 leaves the h = 1 bytes sign-extended (columns 8-15; a lane pair holds the two k
// values); the same step loaded one byte early puts the h = 0 bytes in the high halves, so another
// >> 8 gives columns 0-7 (two loads and two shifts per step, no shuffles; kInt8Lead spare bytes sit
// before the panels for the first step's early load). Each is ready for vpmaddwd against the
// broadcast pair (x[2 k2], x[2 k2 + 1]). Four segments (DRAM streams) as for every panel; x pairs are
// repacked the same way, [4][q2][M] int32.
//
// Overflow. A pair sum is at most 2 * 127 * 32767 = 8.3e6; int32 accumulators are flushed to the
// fp32 tile every kInt8Chunk pair steps of all 4 segments (4 * 32 = 128 pair sums <= 1.07e9 < 2^31).
// Row blocks share the widened weights: 6 rows with AVX2's 16 registers, 12 in the AVX-512 VNNI build
// (linear_avx512_int8.cpp), whose vpdpwssd also fuses the multiply and the add. Rows are batch
// invariant and both builds give the same bits (integer sums are exact; the flushes happen at the
// same k for every row and block size). The body: linear_int8_kernel.h.

// out[k] = round(x[k] / scale) with scale = max|x| / 32767 (1 for an all-zero row); returns scale.
// A row holding inf or NaN returns NaN with out all zero, so the layer's outputs for it are NaN:
// the caller sees a non-finite result, as it would from a float kernel.
DOTF_AVX2 float quantize_row_int16(const float* x, int64_t K, int16_t* out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps(), poison = _mm256_setzero_ps();  // poison: x * 0 is NaN for inf/NaN
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, abs_mask));
    poison = _mm256_add_ps(poison, _mm256_mul_ps(v, _mm256_setzero_ps()));
  }
  alignas(32) float lanes[8], bad[8];
  _mm256_store_ps(lanes, vmax);
  _mm256_store_ps(bad, poison);
  float amax = 0, nonfinite = 0;
  for (int i = 0; i < 8; ++i) amax = std::max(amax, lanes[i]), nonfinite += bad[i];
  for (int64_t t = k; t < K; ++t) amax = std::max(amax, std::fabs(x[t])), nonfinite += x[t] * 0.0f;
  if (std::isnan(nonfinite)) {
    std::fill(out, out + K, int16_t{0});
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float scale = amax / 32767.0f;
  if (!(scale > 0) || !std::isfinite(1.0f / scale)) {  // all zero (or denormal: zero at this precision)
    std::fill(out, out + K, int16_t{0});
    return 1.0f;
  }
  const float inv_scale = 1.0f / scale;
  const __m256 inv = _mm256_set1_ps(inv_scale);
  alignas(32) int32_t q[8];
  for (k = 0; k + 8 <= K; k += 8) {  // |x / scale| <= 32767 (+ rounding): no int16 overflow
    _mm256_store_si256(reinterpret_cast<__m256i*>(q), _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), inv)));
    for (int i = 0; i < 8; ++i) out[k + i] = static_cast<int16_t>(std::clamp(q[i], -32767, 32767));
  }
  for (; k < K; ++k) out[k] = static_cast<int16_t>(std::clamp<long>(std::lrint(x[k] * inv_scale), -32767, 32767));
  return scale;
}

#endif  // DOTF_HAVE_AVX2_KERNEL

// Kp for int8 panels: pairs of k split into 4 segments.
constexpr int64_t kInt8KMultiple = 2 * kSegments;
constexpr int64_t kInt8Lead = 32;  // spare bytes before the panels (one is read)

}  // namespace

Int8Panels quantize_int8_panels(const at::Tensor& w) {
  const int64_t N = w.size(0);
  auto [q8, scale] = quantize_int8_per_channel(w);  // the one int8 scheme (ops/quant_linear.h)
  const at::Tensor q = pad_for_panels(q8, kInt8KMultiple);
  const int64_t P = q.size(0) / kPanel, Kp = q.size(1);
  Int8Panels out;
  // [P, h, j, k2, kk] (column 8h + j, k = 2 k2 + kk) -> [P, k2, j, kk, h]: byte 4j + 2kk + h of a step.
  const at::Tensor steps = q.view({P, 2, kPanel / 2, Kp / 2, 2}).permute({0, 3, 2, 4, 1});
  // One spare byte in front: the kernel reads each step's even bytes with a load one byte early.
  at::Tensor storage = empty_on_huge_pages({kInt8Lead + q.numel()}, q.options());
  storage.narrow(0, 0, kInt8Lead).zero_();  // the panels after it are all written by the copy
  out.packed = storage.narrow(0, kInt8Lead, q.numel()).view(steps.sizes());
  out.packed.copy_(steps);
  out.scale = at::zeros({P * kPanel}, scale.options());
  out.scale.narrow(0, 0, N).copy_(scale);
  return out;
}

at::Tensor int8_panel_values(const Int8Panels& w, int64_t N, int64_t K) {
  const int64_t P = w.packed.size(0), Kp = 2 * w.packed.size(1);
  return w.packed.permute({0, 4, 2, 1, 3}).reshape({P * kPanel, Kp}).narrow(0, 0, N).narrow(1, 0, K);
}

at::Tensor dequantize_int8_panels(const Int8Panels& w, int64_t N, int64_t K) {
  return int8_panel_values(w, N, K).to(at::kFloat) * w.scale.narrow(0, 0, N).unsqueeze(1);
}

int64_t int8_fp32_roundings(const Int8Panels& w) {
  const int64_t q2 = w.packed.size(1) / kSegments;
  return 2 * ((q2 + kInt8Chunk - 1) / kInt8Chunk) + 2;
}

at::Tensor linear_int8(const at::Tensor& x, const Int8Panels& w, const std::optional<at::Tensor>& bias, int64_t N) {
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t M = xf.size(0), K = xf.size(1), P = w.packed.size(0), q2 = w.packed.size(1) / kSegments;
  // x -> int16 per row (zero past K), then the segment layout with one pair of k per step, as int32.
  const int64_t Kp = 2 * kSegments * q2, xseg = segment_stride(q2, M);
  std::vector<int16_t> rows(M * Kp, 0);
  std::vector<float> sx(M);
  const float* src = xf.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) sx[m] = quantize_row_int16(src + m * K, K, rows.data() + m * Kp);
  std::vector<int32_t> xs(kSegments * xseg);
  fill_segments(xs.data(), M, q2, [&](int64_t m, int64_t kk) {
    const int16_t* pair = rows.data() + m * Kp + 2 * kk;
    return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(pair[0])) |
                                (static_cast<uint32_t>(static_cast<uint16_t>(pair[1])) << 16));
  });
  // Written with the panels' padded width, so every panel stores whole vectors; narrowed at the end.
  const int64_t ldy = P * kPanel;
  at::Tensor y = at::empty({M, ldy}, xf.options());
  const int8_t* wp = w.packed.data_ptr<int8_t>();
  const float* sw = w.scale.data_ptr<float>();
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const bool vnni = avx512_vnni_enabled();
  at::parallel_for(0, P, panel_grain(2 * q2 * kSegments), [&](int64_t b, int64_t e) {
    (vnni ? int8_vnni::int8_linear_panels : int8_avx2::int8_linear_panels)(xs.data(), sx.data(), M, q2, xseg, wp, sw,
                                                                          bp, N, yp, ldy, b, e);
  });
  return ldy == N ? y : y.narrow(1, 0, N).contiguous();
#else
  DOTF_CHECK(false, "linear path 'int8_avx2' is not built for this architecture");
  return {};
#endif
}

}  // namespace dotf::avx2
