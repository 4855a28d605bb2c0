#include "ops/linear.h"

#include "common/check.h"

#include <ATen/ops/linear.h>

namespace dotf {

std::string to_string(LinearPath path) {
  switch (path) {
    case LinearPath::Aten: return "aten";
    case LinearPath::OneDnnPacked: return "onednn";
    case LinearPath::Int8Dynamic: return "int8";
  }
  return "?";
}

LinearPath linear_path_from_string(const std::string& name) {
  if (name == "aten") return LinearPath::Aten;
  if (name == "onednn") return LinearPath::OneDnnPacked;
  if (name == "int8") return LinearPath::Int8Dynamic;
  throw ValueError("linear path must be one of 'aten', 'onednn', 'int8', got '" + name + "'");
}

Linear::Linear(at::Tensor weight, std::optional<at::Tensor> bias, LinearPath path)
    : weight_(std::move(weight)), bias_(std::move(bias)), path_(path) {
  DOTF_CHECK_DIM(weight_, 2, "linear weight");
  if (bias_) {
    DOTF_CHECK_DIM(*bias_, 1, "linear bias");
    DOTF_CHECK_SIZE(*bias_, 0, weight_.size(0), "linear bias");
  }
  DOTF_CHECK_ARG(path_ == LinearPath::Aten, "linear path '", to_string(path_), "' is not built yet");
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  return at::linear(x, weight_, bias_);
}

int64_t Linear::extra_bytes() const {
  int64_t bytes = 0;
  if (packed_.defined()) bytes += packed_.nbytes();
  return bytes;
}

}  // namespace dotf
