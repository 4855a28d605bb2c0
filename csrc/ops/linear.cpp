#include "ops/linear.h"

#include "core/check.h"
#include "ops/cpu/features.h"
#include "ops/cpu/linear_avx2.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/quantize_per_channel.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>


namespace dotf {

std::string to_string(LinearPath path) {
  switch (path) {
    case LinearPath::Aten: return "aten";
    case LinearPath::OneDnnPacked: return "onednn";
    case LinearPath::Int8Dynamic: return "int8";
    case LinearPath::Avx2Packed: return "avx2";
    case LinearPath::Int8Avx2: return "int8_avx2";
  }
  return "?";
}

LinearPath linear_path_from_string(const std::string& name) {
  if (name == "aten") return LinearPath::Aten;
  if (name == "onednn") return LinearPath::OneDnnPacked;
  if (name == "int8") return LinearPath::Int8Dynamic;
  if (name == "avx2") return LinearPath::Avx2Packed;
  if (name == "int8_avx2") return LinearPath::Int8Avx2;
  throw ValueError("linear path must be one of 'aten', 'onednn', 'int8', 'avx2', 'int8_avx2', got '" + name + "'");
}

// Why these defaults (bench/results/linear_paths.md, from bench/linear_paths.py; torch 2.13 CPU,
// AMD EPYC Zen 3 with AVX2 and no AVX-512, 1 thread, weights streamed from DRAM, fastest of 12).
// Linear layers of one decode step summed over the model; time(M=6)/time(M=1) in brackets:
//
//                      SmolLM2-135M                      Qwen2.5-0.5B
//   path               fp32 M=1          bf16 M=1        fp32 M=1           bf16 M=1
//   aten (MKL)         38.1 ms (2.21x)   30.2 ms (5.50x) 131.9 ms (2.81x)   107.2 ms (5.55x)
//   onednn packed      41.0 ms (1.41x)   38.1 ms*(1.49x) 143.9 ms (1.51x)   141.2 ms*(1.49x)
//   avx2 (ours)        27.3 ms (1.27x)   20.4 ms (1.44x)  97.4 ms (1.26x)    65.3 ms (1.69x)
//   int8 (FBGEMM)      12.3 ms (1.16x)   fp32 in/out      37.2 ms (1.17x)
//   * oneDNN has no bf16 kernel on this CPU (needs avx512bw/vl/dq or avx_ne_convert): fp32 copy.
// int8_avx2 (ours, the draft path on AVX2 CPUs; measured in whole decode steps): SmolLM2 decoding over
// int8 weights took 13.4-14.1 ms/token against 16.6-18.1 ms with FBGEMM (bench/README.md).
//
// oneDNN flattens the M curve but is no faster than MKL at M=1 (slower on most single layers); its
// batch-size hint barely matters (sweep in the results file). The hand-written AVX2 kernel streams
// the weight faster than MKL's sgemv (four DRAM streams per panel) and runs near the FMA roofline
// above M=6, so it wins at every M here and is the default for fp32 and bf16 on AVX2+FMA CPUs.
// Roofline: a 64-byte fp32 line takes ~7 cycles to arrive from DRAM and M cycles of FMAs, so M=16
// costs >= 2.3x of M=1 on this core whatever the kernel (measured 2.3-2.8x); bf16 halves the bytes,
// not the FMAs. Measured on AVX2-only hardware: on AVX-512/AMX CPUs M=1 stays bandwidth bound (so no
// slower) but oneDNN's AMX bf16 kernels may win at larger M; re-measure there before relying on it.
// fp16 and fp64 have no packed path (MKL/ATen). CUDA: cuBLAS (Aten). The int8 paths change the
// numbers and are never a default: they are draft paths (int8_draft_path()), chosen explicitly.
LinearPath default_linear_path(at::ScalarType dtype, at::Device device) {
  if (!device.is_cpu()) return LinearPath::Aten;
  if (dtype != at::kFloat && dtype != at::kBFloat16) return LinearPath::Aten;
  return cpu_has_avx2_fma() ? LinearPath::Avx2Packed : LinearPath::Aten;
}

LinearPath int8_draft_path() { return cpu_has_avx2_fma() ? LinearPath::Int8Avx2 : LinearPath::Int8Dynamic; }

namespace {

// ---- the torch ops we call, found once through the dispatcher ----

// mkldnn::_reorder_linear_weight(Tensor self, int? batch_size=None) -> Tensor
at::Tensor onednn_reorder(const at::Tensor& w, std::optional<int64_t> batch_size) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                             .typed<at::Tensor(const at::Tensor&, std::optional<int64_t>)>();
  return op.call(w, batch_size);
}

// mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr, Scalar?[] scalars, str? algorithm)
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, std::string_view,
                         c10::List<std::optional<at::Scalar>>, std::optional<std::string_view>);
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "").typed<Sig>();
  return op.call(x, w, b, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

// Whether this CPU's oneDNN has a bf16 inner product (it needs avx512bw/vl/dq or avx_ne_convert; the
// reorder refuses otherwise). Probed once on a tiny weight.
bool onednn_has_bf16() {
  static const bool ok = [] {
    try {
      onednn_reorder(at::zeros({16, 16}, at::TensorOptions().dtype(at::kBFloat16)), 1);
      return true;
    } catch (const c10::Error&) {
      return false;
    }
  }();
  return ok;
}

c10::OperatorHandle op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

// quantized::linear_prepack(Tensor W, Tensor? B=None) -> LinearPackedParamsBase
c10::IValue int8_prepack(const at::Tensor& qweight, const std::optional<at::Tensor>& bias) {
  static const c10::OperatorHandle op = op_handle("quantized::linear_prepack");
  torch::jit::Stack stack{qweight, bias ? c10::IValue(*bias) : c10::IValue()};
  op.callBoxed(&stack);
  return std::move(stack.at(0));
}

// FBGEMM's AVX2 kernels sum pairs of u8*s8 products in saturating int16 (vpmaddubsw): with 8-bit
// activations (0..255) and weights reaching +-127 a pair can reach 64770 and clip. reduce_range
// quantizes activations to 7 bits (0..127) so a pair stays within 32258 < 32767; it is what
// torch.ao.nn.quantized.dynamic.Linear passes for FBGEMM. The cost is one bit of activation
// precision (error model checked in tests/cpp/ops/test_linear.cpp, Int8ErrorIsActivationRoundingOnly);
// Int8WithoutReduceRangeSaturatesOnAvx2 there shows the clipping without it (129.5 for 255 here).
constexpr bool kInt8ReduceRange = true;

// quantized::linear_dynamic(Tensor X, LinearPackedParamsBase W_prepack, bool reduce_range=False) -> Tensor
at::Tensor int8_linear(const at::Tensor& x, const c10::IValue& params) {
  static const c10::OperatorHandle op = op_handle("quantized::linear_dynamic");
  torch::jit::Stack stack{x, params, kInt8ReduceRange};
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

// quantized::linear_unpack(LinearPackedParamsBase W_prepack) -> (Tensor W_origin, Tensor? B_origin)
at::Tensor int8_unpack_weight(const c10::IValue& params) {
  static const c10::OperatorHandle op = op_handle("quantized::linear_unpack");
  torch::jit::Stack stack{params};
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

// Sets the quantized engine for the lifetime of the guard (prepack picks FBGEMM's packed layout from
// the engine at prepack time; the call itself dispatches on the packed object), then restores it.
// The engine is process-global: do not build int8 layers concurrently with other quantized work.
class QEngineGuard {
 public:
  explicit QEngineGuard(at::QEngine e) : saved_(at::globalContext().qEngine()) {
    if (saved_ != e) at::globalContext().setQEngine(e);
  }
  ~QEngineGuard() {
    if (at::globalContext().qEngine() != saved_) at::globalContext().setQEngine(saved_);
  }
  QEngineGuard(const QEngineGuard&) = delete;
  QEngineGuard& operator=(const QEngineGuard&) = delete;

 private:
  at::QEngine saved_;
};

// torch 2.13 warns (once, from Quantizer.cpp) that quantized tensor creation functions are deprecated
// (pytorch/pytorch#184982). The FBGEMM int8 ops we use still need a qint8 weight to prepack; a user
// loading a model cannot act on that warning, so it is swallowed while we build the weight.
// If a torch release removes these ops, the int8 path fails at construction with torch's error.
class SilenceWarnings : public c10::WarningHandler {
 public:
  void process(const c10::Warning&) override {}
};

bool has_fbgemm() {
  for (at::QEngine e : at::globalContext().supportedQEngines()) {
    if (e == at::QEngine::FBGEMM) return true;
  }
  return false;
}


}  // namespace


Linear::Linear(at::Tensor weight, std::optional<at::Tensor> bias, LinearPath path)
    : Linear(std::move(weight), std::move(bias), path, kOneDnnBatchHint) {}

Linear::Linear(at::Tensor weight, std::optional<at::Tensor> bias, LinearPath path,
               std::optional<int64_t> onednn_batch_hint)
    : weight_(std::move(weight)), bias_(std::move(bias)), path_(path), onednn_batch_hint_(onednn_batch_hint) {
  DOTF_CHECK_DIM(weight_, 2, "linear weight");
  if (bias_) {
    DOTF_CHECK_DIM(*bias_, 1, "linear bias");
    DOTF_CHECK_SIZE(*bias_, 0, weight_.size(0), "linear bias");
  }
  if (path_ == LinearPath::Aten) return;

  // Packed paths. The original weight_ (and bias_) stay referenced although these paths never read
  // them: the model keeps the original weights for the full (verifying) model and derives other
  // paths from them with with_path, e.g. an int8 draft; so the packed data is one extra copy
  // (extra_bytes), never a replacement, and at most one packed copy is held per Linear.
  DOTF_CHECK_ARG(weight_.device().is_cpu(), "linear path '", to_string(path_), "' runs on CPU only, got a weight on ",
                 weight_.device(), "; use linear_path='aten' on ", weight_.device().type());
  DOTF_CHECK_ARG(!bias_ || bias_->device() == weight_.device(), "linear bias must be on ", weight_.device(), ", got ",
                 bias_->device());
  const at::Tensor w = weight_.contiguous();

  if (path_ == LinearPath::Avx2Packed) {
    const at::ScalarType dt = w.scalar_type();
    DOTF_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16, "linear path 'avx2' needs a float32 or bfloat16 weight, got ",
                    dt, "; use linear_path='aten'");
    DOTF_CHECK_ARG(cpu_has_avx2_fma(), "linear path 'avx2' needs an x86-64 CPU with AVX2 and FMA; this one lacks them");
    packed_ = avx2::pack_panels(w);
    packed_bytes_ = packed_.nbytes();
    if (bias_) packed_bias_ = bias_->to(at::kFloat).contiguous();
    return;
  }

  if (path_ == LinearPath::Int8Avx2) {
    DOTF_CHECK_TYPE(at::isFloatingType(w.scalar_type()), "linear path 'int8_avx2' needs a floating-point weight, got ",
                    w.scalar_type());
    DOTF_CHECK_ARG(cpu_has_avx2_fma(),
                   "linear path 'int8_avx2' needs an x86-64 CPU with AVX2 and FMA; this one lacks them (use 'int8')");
    int8_ = avx2::quantize_int8_panels(w);
    packed_bytes_ = int8_.packed.nbytes() + int8_.scale.nbytes();
    if (bias_) packed_bias_ = bias_->to(at::kFloat).contiguous();
    return;
  }

  if (path_ == LinearPath::OneDnnPacked) {
    const at::ScalarType dt = w.scalar_type();
    DOTF_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16,
                    "linear path 'onednn' needs a float32 or bfloat16 weight, got ", dt,
                    "; use linear_path='aten'");
    packed_as_fp32_ = dt == at::kBFloat16 && !onednn_has_bf16();
    const at::ScalarType pdt = packed_as_fp32_ ? at::kFloat : dt;
    packed_ = onednn_reorder(w.to(pdt), onednn_batch_hint_);
    packed_bytes_ = packed_.numel() * static_cast<int64_t>(c10::elementSize(pdt));
    if (bias_) packed_bias_ = bias_->to(pdt).contiguous();
    return;
  }

  // Int8Dynamic: symmetric per-output-channel int8 weights (scale = max|w_row| / 127, zero point 0).
  DOTF_CHECK(has_fbgemm(), "linear path 'int8' needs torch's FBGEMM quantized engine, which this torch lacks");
  SilenceWarnings silence;
  c10::WarningUtils::WarningHandlerGuard silence_guard(&silence);
  const at::Tensor wf = w.to(at::kFloat);
  const at::Tensor scales =
      std::get<0>(wf.abs().max(1)).div(127.0).clamp_min(std::numeric_limits<float>::epsilon()).to(at::kDouble);
  const at::Tensor zero_points = at::zeros({wf.size(0)}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor qweight = at::quantize_per_channel(wf, scales, zero_points, 0, at::kQInt8);
  std::optional<at::Tensor> bias_f;
  if (bias_) bias_f = bias_->to(at::kFloat).contiguous();
  {
    QEngineGuard engine(at::QEngine::FBGEMM);
    packed_params_ = int8_prepack(qweight, bias_f);
  }
  // FBGEMM holds the int8 weight (packed), and per output channel a float scale, an int32 zero point
  // and an int32 column offset (+ the fp32 bias, which the original bias already accounts for).
  packed_bytes_ = wf.numel() + wf.size(0) * (4 + 4 + 4);
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  switch (path_) {
    case LinearPath::Aten:
      return at::linear(x, weight_, bias_);
    case LinearPath::OneDnnPacked: {
      DOTF_CHECK_ARG(x.device().is_cpu(), "linear input must be on cpu for path 'onednn', got ", x.device());
      DOTF_CHECK_TYPE(x.scalar_type() == weight_.scalar_type(), "linear input must have dtype ", weight_.scalar_type(),
                      ", got ", x.scalar_type());
      if (packed_as_fp32_) return onednn_linear(x.to(at::kFloat).contiguous(), packed_, packed_bias_).to(x.scalar_type());
      return onednn_linear(x.contiguous(), packed_, packed_bias_);
    }
    case LinearPath::Avx2Packed: {
      DOTF_CHECK_ARG(x.device().is_cpu(), "linear input must be on cpu for path 'avx2', got ", x.device());
      DOTF_CHECK_TYPE(x.scalar_type() == weight_.scalar_type(), "linear input must have dtype ", weight_.scalar_type(),
                      ", got ", x.scalar_type());
      // Beyond kAvx2MaxM (prefill) the original weight goes to MKL's blocked GEMM: this kernel does not
      // block x for the caches, and it was measured only up to M = 32 (where it still beat MKL here).
      if (x.dim() != 2 || x.size(0) > kAvx2MaxM) return at::linear(x, weight_, bias_);
      DOTF_CHECK_SIZE(x, 1, weight_.size(1), "linear input");
      at::Tensor y = avx2::linear(x, packed_, packed_bias_, weight_.size(0));
      return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
    }
    case LinearPath::Int8Avx2: {
      DOTF_CHECK_ARG(x.device().is_cpu(), "linear input must be on cpu for path 'int8_avx2', got ", x.device());
      DOTF_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "linear input must be floating point, got ", x.scalar_type());
      DOTF_CHECK_ARG(x.dim() >= 1 && x.size(-1) == weight_.size(1), "linear input must have ", weight_.size(1),
                     " features in its last dimension, got shape ", x.sizes());
      // [..., in] -> [rows, in] -> [rows, out] -> [..., out]
      std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
      out_shape.back() = weight_.size(0);
      at::Tensor y = avx2::linear_int8(x.reshape({-1, x.size(-1)}), int8_, packed_bias_, weight_.size(0)).view(out_shape);
      return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
    }
    case LinearPath::Int8Dynamic: {
      DOTF_CHECK_ARG(x.device().is_cpu(), "linear input must be on cpu for path 'int8', got ", x.device());
      DOTF_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "linear input must be floating point, got ", x.scalar_type());
      if (x.scalar_type() == at::kFloat) return int8_linear(x.contiguous(), packed_params_);
      return int8_linear(x.to(at::kFloat).contiguous(), packed_params_).to(x.scalar_type());
    }
  }
  DOTF_CHECK(false, "unknown linear path");
  return {};
}

int64_t Linear::extra_bytes() const { return packed_bytes_; }

at::Tensor Linear::effective_weight() const {
  if (path_ == LinearPath::Int8Dynamic) return int8_unpack_weight(packed_params_).dequantize();
  if (path_ == LinearPath::Int8Avx2) return avx2::dequantize_int8_panels(int8_, weight_.size(0), weight_.size(1));
  return weight_;
}

}  // namespace dotf
