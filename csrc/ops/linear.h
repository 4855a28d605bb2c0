#pragma once
// A linear layer y = x W^T + b whose weight is laid out once, at load time, for the path that makes
// small-M products (decode M=1, verify M=k+1) cheap on the device at hand. Every path computes the
// same function; only speed and the rounding of quantized paths differ.
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <optional>
#include <string>

namespace dotf {

enum class LinearPath {
  Aten,         // at::linear: cuBLAS on CUDA, MKL/oneDNN default on CPU; always available
  OneDnnPacked, // CPU: oneDNN weight prepacked for small M (fp32, bf16)
  Int8Dynamic,  // CPU: FBGEMM int8 weight-only per output channel, activations quantized per call
};

std::string to_string(LinearPath path);
LinearPath linear_path_from_string(const std::string& name);

class Linear {
 public:
  Linear() = default;
  // weight: [out, in]; bias: [out] or none. The weight is kept (no copy on the Aten path).
  Linear(at::Tensor weight, std::optional<at::Tensor> bias, LinearPath path = LinearPath::Aten);

  // x: [M, in] -> [M, out], in x's dtype.
  at::Tensor operator()(const at::Tensor& x) const;

  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  LinearPath path() const { return path_; }
  const at::Tensor& weight() const { return weight_; }
  const std::optional<at::Tensor>& bias() const { return bias_; }
  // Bytes held beyond the original weight and bias (a prepacked or quantized copy).
  int64_t extra_bytes() const;
  // The same weights laid out for another path (used to derive a quantized draft).
  Linear with_path(LinearPath path) const { return Linear(weight_, bias_, path); }

 private:
  at::Tensor weight_;
  std::optional<at::Tensor> bias_;
  LinearPath path_ = LinearPath::Aten;
  at::Tensor packed_;        // OneDnnPacked: the reordered weight
  c10::IValue packed_params_; // Int8Dynamic: FBGEMM's packed params object
};

}  // namespace dotf
