#pragma once
// Weight-only quantized linear layers for dotf's draft: y = x (q * scale)^T + bias with the weight
// quantized once from the model's own weights (no calibration), on the weight's device.
//
//   int8  per output channel, symmetric: w[n, k] ~= q[n, k] * scale[n], |q| <= 127,
//         scale[n] = max_k |w[n, k]| / 127 in float32 (at least FLT_EPSILON). The one definition of
//         the int8 scheme: the CPU's Int8Avx2 panels (ops/cpu/linear_avx2_int8.cpp) quantize with it.
//   int4  groups of `group` (default 128) along the input dimension, symmetric: w[n, k] ~= q * s[n, g],
//         |q| <= 7, s[n, g] = max over the group of |w| / 7 rounded to float16 (at least float16's
//         smallest normal, so an all-zero group keeps a finite scale), q = round(w / s) clamped.
// Both round half to even (at::round). bench/quant_draft_acceptance.py emulates the same schemes.
//
// On CUDA, quant_linear runs dotf's kernels for small M (ops/cuda/quant_linear.cu: weights streamed
// once per 16 rows of x, dequantized in registers, float32 sums); on the CPU it is the float64
// reference rounded to x's dtype.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>

namespace dotf {

inline constexpr int64_t kInt4Group = 128;

// The int8 scheme above. w: [N, K] floating point, any device -> (q [N, K] int8, scale [N] float32).
std::pair<at::Tensor, at::Tensor> quantize_int8_per_channel(const at::Tensor& w);

struct QuantizedWeight {
  // int8: [N, Kp] int8, Kp = K rounded up to 16, zero-padded.
  // int4: [N, Kp / 2] uint8, Kp = K rounded up to `group`, zero-padded; byte j of a row holds
  //       k = 2j in its low nibble and k = 2j + 1 in its high nibble, each as q + 8 (0..15).
  at::Tensor qweight;
  // int8: [N] float32; int4: [N, Kp / group] float16.
  at::Tensor scale;
  int bits = 8;
  int64_t group = 0;        // int4: inputs per scale; 0 for int8
  int64_t in_features = 0;  // K

  int64_t out_features() const { return qweight.size(0); }
  int64_t padded_in_features() const { return bits == 8 ? qweight.size(1) : 2 * qweight.size(1); }
  // Bytes of qweight and scale together.
  int64_t bytes() const;
};

// w: [N, K] float32/float16/bfloat16 (float64 too), quantized on its device. bits: 8 or 4; group
// (int4 only): a positive multiple of 32.
QuantizedWeight quantize_weight(const at::Tensor& w, int bits, int64_t group = kInt4Group);

// The weight the kernels multiply by, q * scale: [N, K] in `dtype` (float64 by default, exact).
at::Tensor dequantize_weight(const QuantizedWeight& w, at::ScalarType dtype = at::kDouble);

// x: [M, K] float32/float16/bfloat16; bias: [N] or none -> [M, N] in x's dtype. CUDA: the kernels
// (any M; the weights are streamed once per 16 rows); CPU: quant_linear_reference rounded to x's dtype.
at::Tensor quant_linear(const at::Tensor& x, const QuantizedWeight& w, const std::optional<at::Tensor>& bias);

// The reference every kernel is tested against: x and the dequantized weight in float64,
// x dequantize_weight(w)^T + bias -> [M, N] float64, on x's device.
at::Tensor quant_linear_reference(const at::Tensor& x, const QuantizedWeight& w, const std::optional<at::Tensor>& bias);

}  // namespace dotf
