#include "ops/quant_linear.h"

#include "core/check.h"
#include "ops/cuda/entries.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/stack.h>

#include <c10/util/Half.h>

#include <limits>

namespace dotf {

namespace {

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The layout QuantizedWeight documents; every op that reads one checks it first.
void check_quantized(const QuantizedWeight& w, const char* op) {
  DOTF_CHECK_ARG(w.bits == 8 || w.bits == 4, op, ": bits must be 8 or 4, got ", w.bits);
  DOTF_CHECK_DIM(w.qweight, 2, "qweight");
  const int64_t N = w.qweight.size(0), K = w.in_features, Kp = w.padded_in_features();
  DOTF_CHECK_ARG(K > 0 && Kp >= K, op, ": in_features ", K, " does not fit qweight ", w.qweight.sizes());
  DOTF_CHECK_ARG(w.scale.device() == w.qweight.device(), op, ": scale is on ", w.scale.device(), ", qweight on ",
                 w.qweight.device());
  if (w.bits == 8) {
    DOTF_CHECK_DTYPE(w.qweight, at::kChar, "int8 qweight");
    DOTF_CHECK_DTYPE(w.scale, at::kFloat, "int8 scale");
    DOTF_CHECK_ARG(Kp == round_up(K, 16), op, ": int8 qweight [N, Kp] needs Kp = K rounded up to 16 (K ", K,
                   "), got ", Kp);
    DOTF_CHECK_ARG(w.scale.dim() == 1 && w.scale.size(0) == N, op, ": int8 scale must be [N] = [", N, "], got ",
                   w.scale.sizes());
  } else {
    DOTF_CHECK_DTYPE(w.qweight, at::kByte, "int4 qweight");
    DOTF_CHECK_DTYPE(w.scale, at::kHalf, "int4 scale");
    DOTF_CHECK_ARG(w.group > 0 && w.group % 32 == 0, op, ": int4 group must be a positive multiple of 32, got ",
                   w.group);
    DOTF_CHECK_ARG(Kp == round_up(K, w.group), op, ": int4 qweight [N, Kp/2] needs Kp = K rounded up to the group (K ",
                   K, ", group ", w.group, "), got Kp ", Kp);
    DOTF_CHECK_ARG(w.scale.dim() == 2 && w.scale.size(0) == N && w.scale.size(1) == Kp / w.group, op,
                   ": int4 scale must be [N, Kp/group] = [", N, ", ", Kp / w.group, "], got ", w.scale.sizes());
  }
}

// x: [M, K] and bias: [N] or none, against w.
void check_input(const at::Tensor& x, const QuantizedWeight& w, const std::optional<at::Tensor>& bias, const char* op) {
  DOTF_CHECK_DIM(x, 2, "x");
  DOTF_CHECK_ARG(x.size(1) == w.in_features, op, ": x is [M, ", x.size(1), "] but the weight has in_features ",
                 w.in_features);
  DOTF_CHECK_ARG(x.device() == w.qweight.device(), op, ": x is on ", x.device(), ", the weight on ",
                 w.qweight.device());
  if (bias) {
    DOTF_CHECK_ARG(bias->dim() == 1 && bias->size(0) == w.out_features(), op, ": bias must be [N] = [",
                   w.out_features(), "], got ", bias->sizes());
    DOTF_CHECK_ARG(bias->device() == x.device(), op, ": bias is on ", bias->device(), ", x on ", x.device());
  }
}

}  // namespace

std::pair<at::Tensor, at::Tensor> quantize_int8_per_channel(const at::Tensor& w) {
  DOTF_CHECK_DIM(w, 2, "w");
  DOTF_CHECK_TYPE(at::isFloatingType(w.scalar_type()), "w must be floating point, got ", w.scalar_type());
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const at::Tensor scale =
      std::get<0>(wf.abs().max(1)).div(127.0).clamp_min(std::numeric_limits<float>::epsilon());
  const at::Tensor q = (wf / scale.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar);
  return {q, scale};
}

int64_t QuantizedWeight::bytes() const { return qweight.nbytes() + scale.nbytes(); }

QuantizedWeight quantize_weight(const at::Tensor& w, int bits, int64_t group) {
  DOTF_CHECK_DIM(w, 2, "w");
  DOTF_CHECK_ARG(bits == 8 || bits == 4, "quantize_weight: bits must be 8 or 4, got ", bits);
  DOTF_CHECK_ARG(w.size(0) > 0 && w.size(1) > 0, "quantize_weight: w must be non-empty [N, K], got ", w.sizes());
  const int64_t N = w.size(0), K = w.size(1);
  QuantizedWeight out;
  out.bits = bits;
  out.in_features = K;
  if (bits == 8) {
    auto [q, scale] = quantize_int8_per_channel(w);
    out.qweight = at::constant_pad_nd(q, {0, round_up(K, 16) - K}).contiguous();  // [N, Kp] int8
    out.scale = scale;                                                            // [N] float32
    return out;
  }
  DOTF_CHECK_ARG(group > 0 && group % 32 == 0, "quantize_weight: the int4 group must be a positive multiple of 32, got ",
                 group);
  DOTF_CHECK_TYPE(at::isFloatingType(w.scalar_type()), "w must be floating point, got ", w.scalar_type());
  const int64_t Kp = round_up(K, group);
  const at::Tensor g = at::constant_pad_nd(w.to(at::kFloat), {0, Kp - K}).view({N, Kp / group, group});
  const double tiny = std::numeric_limits<c10::Half>::min();  // float16's smallest normal
  const at::Tensor s = std::get<0>(g.abs().max(2, true)).div(7.0).to(at::kHalf).to(at::kFloat).clamp_min(tiny);
  const at::Tensor u = (g / s).round().clamp(-7, 7).add(8).to(at::kByte).view({N, Kp / 2, 2});  // q + 8
  out.group = group;
  out.qweight = u.select(2, 1).mul(16).add(u.select(2, 0)).contiguous();  // [N, Kp/2] uint8
  out.scale = s.squeeze(2).to(at::kHalf).contiguous();                   // [N, Kp/group] float16
  return out;
}

at::Tensor dequantize_weight(const QuantizedWeight& w, at::ScalarType dtype) {
  check_quantized(w, "dequantize_weight");
  const int64_t N = w.out_features(), K = w.in_features, Kp = w.padded_in_features();
  at::Tensor deq;
  if (w.bits == 8) {
    deq = w.qweight.to(at::kDouble) * w.scale.to(at::kDouble).unsqueeze(1);
  } else {
    const at::Tensor lo = w.qweight.remainder(16), hi = w.qweight.div(16, "floor");
    const at::Tensor q = at::stack({lo, hi}, 2).view({N, Kp}).to(at::kDouble).sub_(8);
    deq = q.view({N, Kp / w.group, w.group}).mul(w.scale.to(at::kDouble).unsqueeze(2)).view({N, Kp});
  }
  return deq.narrow(1, 0, K).to(dtype);
}

at::Tensor quant_linear_reference(const at::Tensor& x, const QuantizedWeight& w, const std::optional<at::Tensor>& bias) {
  check_quantized(w, "quant_linear_reference");
  check_input(x, w, bias, "quant_linear_reference");
  at::Tensor y = at::matmul(x.to(at::kDouble), dequantize_weight(w).t());
  if (bias) y.add_(bias->to(at::kDouble));
  return y;
}

at::Tensor quant_linear(const at::Tensor& x, const QuantizedWeight& w, const std::optional<at::Tensor>& bias) {
  check_quantized(w, "quant_linear");
  check_input(x, w, bias, "quant_linear");
  if (x.is_cuda()) {  // the kernels: [M, K] x [N, Kp] quantized -> [M, N]
    at::Tensor out = at::empty({x.size(0), w.out_features()}, x.options());
    quant_linear_cuda(x.contiguous(), w, bias ? bias->contiguous() : at::Tensor(), out);
    return out;
  }
  return quant_linear_reference(x, w, bias).to(x.scalar_type());
}

}  // namespace dotf
