#pragma once
// The k largest outputs of a linear layer, exact, without computing the rest: an int8 copy of the weight
// puts every output within a rigorous bound of the value the layer itself computes, and only the
// 16-column panels that may hold one of a row's k largest go through the layer's own kernel. The LM
// head's screen: a greedy pass needs only the argmax (k = 1) and top-k sampling the k largest logits,
// so such a pass reads the head's int8 copy (a quarter of its fp32 bytes) plus a few fp32 panels
// (bench/README.md "LM-head screen"). The bound and why the result is exact: linear_screen.cpp.
#include "ops/linear.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace dotf {

// Past this k the screen keeps enough panels that its int8 pass no longer pays: top_k computes every
// output. transformers' default top_k (50) is within it.
inline constexpr int64_t kScreenMaxTopK = 128;

class LinearScreen {
 public:
  // Whether `layer` can be screened on this machine: path Avx2Packed (fp32 or bf16 weights), whose
  // panels the screen computes one by one with the layer's own kernel, bitwise as the whole layer does
  // (rows and panels are summed independently there). Every other path keeps its full product: cuBLAS,
  // MKL and oneDNN (Aten, OneDnnPacked: CUDA, fp16, fp64, CPUs without AVX2) promise no such
  // per-column invariance, and the int8 paths are drafts already.
  static bool supports(const Linear& layer);

  // layer: supports(layer), else ValueError. int8: an Int8Avx2 copy of layer's weight to share (an int8
  // draft's layer), or none to quantize one here. Holds the layer (its tensors shared, not copied),
  // the int8 copy and per output four floats of the bound.
  explicit LinearScreen(const Linear& layer, std::optional<Linear> int8 = std::nullopt);

  const Linear& layer() const { return layer_; }
  const Linear& int8() const { return int8_; }
  // Bytes held beyond the layer's own: the int8 copy and the per-output bound terms.
  int64_t extra_bytes() const;

  // x: [M, in] -> [M, out] in x's dtype. Per row, every output that can be among the row's k largest
  // (each one tied with the k-th included) bitwise as layer()(x) computes it, and -inf where the bound
  // proves an output smaller than k others; outputs next to a kept one (its panel) are exact as well.
  // Returns layer()(x) itself (no -inf) when k <= 0, k > kScreenMaxTopK, k >= out, M > kAvx2MaxM, or x
  // or the weights are non-finite or too large or small in magnitude for the bound (see the .cpp).
  at::Tensor top_k(const at::Tensor& x, int64_t k) const;

  // For tests: x: [M, in] -> (l8 [M, out] float32, bound [M, out] float64): the int8 outputs and their
  // bound; each output of layer()(x) before any rounding to x's dtype lies in [l8 - bound, l8 + bound].
  // Both undefined when the bound does not apply to x.
  std::pair<at::Tensor, at::Tensor> bounds(const at::Tensor& x) const;

 private:
  struct RowNorms {
    double l1 = 0, amax = 0;  // ||x||_1 and max |x_k| of a row of x
  };
  // The norms of each row of xf ([M, in] float32, contiguous); nullopt where the bound does not apply.
  std::optional<std::vector<RowNorms>> row_norms(const at::Tensor& xf) const;
  // bound[n] for n < out: the bound of |l8[n] - exact[n]| for a row of x with norms r; false (and
  // bound partly written) when some |l8| + bound is not below 2^100 or not finite.
  bool fill_bounds(const RowNorms& r, const float* l8, double* bound) const;

  Linear layer_;
  Linear int8_;
  at::Tensor terms_;  // [out, 4] float32 per output: max|w - s q| (rounded up), s, sum|q|, |bias|
  double fp32_gamma_ = 0;  // gamma(n) of the two kernels' fp32 roundings (see the .cpp)
};

}  // namespace dotf
