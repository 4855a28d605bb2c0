#pragma once
// A linear layer y = x W^T + b whose weight is laid out once, at load time, for the path that makes
// small-M products (decode M=1, verify M=k+1) cheap on the device at hand. Every path computes the
// same function; only speed and the rounding of quantized paths differ.
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include "ops/cpu/linear_avx2.h"

#include <optional>
#include <string>

namespace dotf {

enum class LinearPath {
  Aten,         // at::linear: cuBLAS on CUDA, MKL/oneDNN default on CPU; always available
  OneDnnPacked, // CPU: oneDNN weight prepacked for small M (fp32, bf16)
  Int8Dynamic,  // CPU: FBGEMM int8 weight-only per output channel, activations quantized per call
  Avx2Packed,   // CPU (x86 AVX2+FMA): hand-written small-M kernel over a panel-packed copy (fp32,
                // bf16); at::linear for M > kAvx2MaxM. Written because the library paths fall short
                // for small M on AVX2-only CPUs (numbers in linear.cpp). Rows are batch invariant:
                // a row's result does not depend on M or the thread count.
  Int8Avx2,     // CPU (x86 AVX2+FMA): int8 weights per output channel times x rounded per row to
                // int16, exact integer sums (ops/cpu/linear_avx2.h). The draft path on AVX2 CPUs: faster
                // than Int8Dynamic at small M, and 16-bit instead of 7-bit activations. Rows are batch
                // invariant.
};

std::string to_string(LinearPath path);
LinearPath linear_path_from_string(const std::string& name);

// The path that measured fastest for small M (1..16) for weights of this dtype on this device:
// Avx2Packed for fp32/bf16 on an AVX2+FMA CPU, Aten otherwise (fp16, fp64, CUDA, other CPUs). The
// measurements behind it are in linear.cpp. Never returns Int8Dynamic (it changes the numbers: it is
// a draft path, chosen explicitly).
LinearPath default_linear_path(at::ScalarType dtype, at::Device device);

// The int8 path dotf's quantized draft runs on: Int8Avx2 on an AVX2+FMA CPU (faster at draft sizes,
// 16-bit instead of 7-bit activations), Int8Dynamic (FBGEMM) on other CPUs.
LinearPath int8_draft_path();

// The batch-size hint given to oneDNN when it prepacks a weight (mkldnn::_reorder_linear_weight).
// Swept over {none, 1, 2, 4, 6, 8, 16} (bench/results/linear_paths.md): 1 gives the fastest M=1 and
// the steepest growth with M; from 2 up the curves are within the machine's noise of each other,
// none of them flat (M=6 ~1.3-1.5x, M=16 ~2.3-2.5x of M=1). 8 is kept as the verify-sized middle.
// Exposed so benchmarks can sweep it.
inline constexpr int64_t kOneDnnBatchHint = 8;

class Linear {
 public:
  Linear() = default;
  // weight: [out, in]; bias: [out] or none. The weight is kept (no copy on the Aten path).
  // Packed paths need a CPU weight (ValueError otherwise); OneDnnPacked and Avx2Packed need fp32 or
  // bf16 (TypeError); Avx2Packed needs an AVX2+FMA CPU (ValueError).
  Linear(at::Tensor weight, std::optional<at::Tensor> bias, LinearPath path = LinearPath::Aten);
  // Same, with an explicit oneDNN batch-size hint (benchmarks; nullopt lets oneDNN pick).
  Linear(at::Tensor weight, std::optional<at::Tensor> bias, LinearPath path, std::optional<int64_t> onednn_batch_hint);

  // x: [M, in] -> [M, out], in x's dtype.
  at::Tensor operator()(const at::Tensor& x) const;

  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  LinearPath path() const { return path_; }
  const at::Tensor& weight() const { return weight_; }
  const std::optional<at::Tensor>& bias() const { return bias_; }
  // Bytes held beyond the original weight and bias (a prepacked or quantized copy): the packed weight
  // (padding included) for OneDnnPacked/Avx2Packed; int8 weight + per-channel scale, zero point and
  // column offset for Int8Dynamic; int8 panels and per-channel scales (padding included) for Int8Avx2;
  // 0 for Aten.
  int64_t extra_bytes() const;
  // The same weights laid out for another path (used to derive a quantized draft).
  Linear with_path(LinearPath path) const { return Linear(weight_, bias_, path, onednn_batch_hint_); }

  // The weight this path actually multiplies by, as a dense float tensor of weight()'s shape: the
  // dequantized int8 weight on Int8Dynamic (unpacked from FBGEMM, so tests see exactly what runs) and
  // Int8Avx2, weight() otherwise. Allocates on the int8 paths; meant for tests and diagnostics.
  at::Tensor effective_weight() const;
  // True when a bf16 weight was prepacked as an fp32 copy because this CPU's oneDNN has no bf16
  // inner product (needs avx512bw/vl/dq or avx_ne_convert); the copy then takes twice the bytes.
  bool packed_as_fp32() const { return packed_as_fp32_; }
  // Int8Avx2: the int8 panels (shared by copies of this Linear, as the LM-head screen's and the int8
  // draft's head are: tests check that through it).
  const avx2::Int8Panels& int8_panels() const { return int8_; }

 private:
  friend class LinearScreen;  // runs this layer's kernels on chosen panels (ops/linear_screen.h)

  at::Tensor weight_;
  std::optional<at::Tensor> bias_;
  LinearPath path_ = LinearPath::Aten;
  std::optional<int64_t> onednn_batch_hint_ = kOneDnnBatchHint;
  at::Tensor packed_;         // OneDnnPacked: the reordered weight (an opaque oneDNN tensor);
                              // Avx2Packed: [ceil(out/16), in rounded up to 4, 16] panels, zero-padded
  std::optional<at::Tensor> packed_bias_;  // OneDnnPacked: bias in the packed dtype; Avx2Packed: fp32
  bool packed_as_fp32_ = false;
  c10::IValue packed_params_; // Int8Dynamic: FBGEMM's packed params object
  avx2::Int8Panels int8_;     // Int8Avx2: int8 panels and per-channel scales
  int64_t packed_bytes_ = 0;  // bytes of packed_ / packed_params_ (opaque to nbytes())
};

}  // namespace dotf
