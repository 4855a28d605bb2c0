#pragma once
// dotf's hand-written small-M linear kernels for x86-64 AVX2+FMA CPUs (the Avx2Packed and Int8Avx2
// paths of ops/linear.h). Weights are packed once into panels of 16 output columns; x is fp32.
// fp32/bf16 weights: linear_avx2.cpp; int8 weights: linear_avx2_int8.cpp; the panel and segment
// layout both share: linear_avx2_layout.h. Callers check cpu_has_avx2_fma() (ops/cpu/features.h).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace dotf {

// Avx2Packed runs its own kernel for M <= kAvx2MaxM rows and at::linear (MKL) beyond (prefill).
inline constexpr int64_t kAvx2MaxM = 32;

namespace avx2 {

// Output columns per packed panel: the unit linear_panels computes.
inline constexpr int64_t kPanel = 16;

// w: [N, K] -> [ceil(N/16), Kp, 16], K zero-padded to Kp (a multiple of 4), same dtype.
at::Tensor pack_panels(const at::Tensor& w);

// x: [M, K] fp32-convertible, M <= kAvx2MaxM; packed: pack_panels of an fp32 or bf16 weight [N, K];
// bias: [N] fp32 or none -> [M, N] fp32. Rows are batch invariant (a row's result does not depend on M
// or the thread count).
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias, int64_t N);

// The listed panels of linear(): y[:, 16 p, 16 p + 16) (clipped to N) for each p in panels, bitwise the
// values linear() computes there (each panel is summed on its own, whatever else is computed); the
// other columns of y are left as they are. x, packed, bias, N: as for linear(); y: [M, N] fp32,
// contiguous; panels: distinct indices < ceil(N/16).
void linear_panels(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias, int64_t N,
                   const std::vector<int64_t>& panels, at::Tensor& y);

// Symmetric per-output-channel int8 weights: w[n, k] ~= q[n, k] * scale[n], |q| <= 127, by the one
// int8 scheme (quantize_int8_per_channel, ops/quant_linear.h) that the CUDA draft kernels use too.
struct Int8Panels {
  at::Tensor packed;  // [ceil(N/16), Kp/2, 8, 2, 2] int8, zero-padded (layout in linear_avx2_int8.cpp)
  at::Tensor scale;   // [ceil(N/16) * 16] fp32, zero-padded
};
// w: [N, K] floating point.
Int8Panels quantize_int8_panels(const at::Tensor& w);
// The int8 values q [N, K] (int8) and the float weight [N, K] the int8 kernel multiplies by (q * scale),
// for tests, diagnostics and the error bound of ops/linear_screen.h.
at::Tensor int8_panel_values(const Int8Panels& w, int64_t N, int64_t K);
at::Tensor dequantize_int8_panels(const Int8Panels& w, int64_t N, int64_t K);

// y = x (q * scale)^T + bias with each row of x rounded to int16 (scale max|x_m| / 32767) and exact
// int32 products; rows are batch invariant. x: [M, K]; bias: [N] fp32 or none -> [M, N] fp32. A row
// of x holding inf or NaN gives a row of NaN.
at::Tensor linear_int8(const at::Tensor& x, const Int8Panels& w, const std::optional<at::Tensor>& bias, int64_t N);

// The fp32 roundings linear_int8 makes per output after its exact integer sums: two per int32 -> fp32
// flush of the accumulators (the conversion and the addition), then the row scale and the fused weight
// scale plus bias. For error bounds (ops/linear_screen.cpp).
int64_t int8_fp32_roundings(const Int8Panels& w);

}  // namespace avx2
}  // namespace dotf
