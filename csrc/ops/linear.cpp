#include "ops/linear.h"

#include "common/check.h"
#include "ops/cpu_simd.h"

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


namespace dotf {

std::string to_string(LinearPath path) {
  switch (path) {
    case LinearPath::Aten: return "aten";
    case LinearPath::OneDnnPacked: return "onednn";
    case LinearPath::Int8Dynamic: return "int8";
    case LinearPath::Avx2Packed: return "avx2";
  }
  return "?";
}

LinearPath linear_path_from_string(const std::string& name) {
  if (name == "aten") return LinearPath::Aten;
  if (name == "onednn") return LinearPath::OneDnnPacked;
  if (name == "int8") return LinearPath::Int8Dynamic;
  if (name == "avx2") return LinearPath::Avx2Packed;
  throw ValueError("linear path must be one of 'aten', 'onednn', 'int8', 'avx2', got '" + name + "'");
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
//   int8 (draft)       12.3 ms (1.16x)   fp32 in/out      37.2 ms (1.17x)
//   * oneDNN has no bf16 kernel on this CPU (needs avx512bw/vl/dq or avx_ne_convert): fp32 copy.
//
// oneDNN flattens the M curve but is no faster than MKL at M=1 (slower on most single layers); its
// batch-size hint barely matters (sweep in the results file). The hand-written AVX2 kernel streams
// the weight faster than MKL's sgemv (four DRAM streams per panel) and runs near the FMA roofline
// above M=6, so it wins at every M here and is the default for fp32 and bf16 on AVX2+FMA CPUs.
// Roofline: a 64-byte fp32 line takes ~7 cycles to arrive from DRAM and M cycles of FMAs, so M=16
// costs >= 2.3x of M=1 on this core whatever the kernel (measured 2.3-2.8x); bf16 halves the bytes,
// not the FMAs. Measured on AVX2-only hardware: on AVX-512/AMX CPUs M=1 stays bandwidth bound (so no
// slower) but oneDNN's AMX bf16 kernels may win at larger M; re-measure there before relying on it.
// fp16 and fp64 have no packed path (MKL/ATen). CUDA: cuBLAS (Aten). Int8Dynamic changes the numbers
// and is never a default: it is a draft path, chosen explicitly.
LinearPath default_linear_path(at::ScalarType dtype, at::Device device) {
  if (!device.is_cpu()) return LinearPath::Aten;
  if (dtype != at::kFloat && dtype != at::kBFloat16) return LinearPath::Aten;
  return cpu_has_avx2_fma() ? LinearPath::Avx2Packed : LinearPath::Aten;
}

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
// precision (error model checked in tests/cpp/test_linear.cpp, Int8ErrorIsActivationRoundingOnly);
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


// ---- Avx2Packed: a hand-written small-M kernel (x86-64 AVX2 + FMA) ----
//
// y[M, N] = x[M, K] W[N, K]^T + b for M <= kAvx2MaxM, fp32 accumulation.
//
// Layout. The weight is packed once into panels of 16 output columns, [ceil(N/16)][Kp][16] with K
// zero-padded to Kp (a multiple of 4): one k step of a panel is one 64-byte line (fp32) or half of
// one (bf16, widened to fp32 in registers: bf16 is fp32's top half).
//
// Four streams. One core streams DRAM at ~10 GB/s from a single sequential stream but ~22 GB/s from
// four (measured here, AVX2 EPYC: the hardware prefetcher runs ahead per stream; software prefetch on
// one stream did not help). So each panel is read as four K segments [s*Kp/4, (s+1)*Kp/4) advanced in
// lockstep, which is what brings M = 1 to MKL's sgemv speed. x is repacked per call into the same four
// segments, k-major ([4][Kp/4][M], the segments padded apart so they do not alias in L1), so the
// broadcasts of a k step for all rows share a line.
//
// Micro-kernel: a 6 x 16 tile of y in 12 ymm registers; per k step, 2 weight loads and 2 FMAs per
// row of x (a broadcast). Weights come from DRAM once per call: for M > 6 the row blocks reuse each
// 64-step chunk (16 KB fp32) from L1. Bias is the tile's initial value.
//
// Batch invariant: every output is summed in the same order (bias, then per chunk k = 0.., segments
// 0..3 in turn) whatever M, the row block a row lands in, or the thread count, so a row of a verify
// batch (M = k+1) is bitwise the row a decode step (M = 1) computes. (A second accumulator set for
// small M would hide FMA latency but change the order; one set still streams at >= 16 B/cycle.)
constexpr int64_t kPanel = 16;    // output columns per panel
constexpr int64_t kSegments = 4;  // concurrent DRAM streams per panel
constexpr int64_t kChunk = 64;    // k steps per segment per pass: a 16 KB fp32 chunk stays in L1 across row blocks
constexpr int64_t kRowBlock = 6;  // rows of x per micro-kernel call

#ifdef DOTF_HAVE_AVX2_KERNEL
using simd::load8;

// c[MB][16] (row stride ldc) += sum over the 4 segments s and k < kc of
//   x[s * xseg + k * ldx + i] * p[(s * q + k) * 16 + j].
template <typename WT, int MB>
DOTF_AVX2 inline void avx2_micro(const WT* __restrict p, int64_t q, int64_t kc, const float* __restrict x, int64_t ldx,
                                 int64_t xseg, float* __restrict c, int64_t ldc) {
  // Named registers, not arrays: GCC keeps arrays of __m256 in registers but also stores them to the
  // stack on every iteration.
  __m256 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51;
#define DOTF_LOADC(i)                                                            \
  if constexpr (MB > i) {                                                        \
    a##i##0 = _mm256_loadu_ps(c + i * ldc);                                      \
    a##i##1 = _mm256_loadu_ps(c + i * ldc + 8);                                  \
  }
#define DOTF_FMA(i)                                                              \
  if constexpr (MB > i) {                                                        \
    const __m256 xv = _mm256_broadcast_ss(xk + i);                               \
    a##i##0 = _mm256_fmadd_ps(xv, w0, a##i##0);                                  \
    a##i##1 = _mm256_fmadd_ps(xv, w1, a##i##1);                                  \
  }
#define DOTF_STEP(s)                                                             \
  {                                                                              \
    const WT* ws = p + ((s) * q + k) * kPanel;                                   \
    const float* xk = x + (s) * xseg + k * ldx;                                  \
    const __m256 w0 = load8(ws), w1 = load8(ws + 8);                             \
    DOTF_FMA(0) DOTF_FMA(1) DOTF_FMA(2) DOTF_FMA(3) DOTF_FMA(4) DOTF_FMA(5)      \
  }
#define DOTF_STOREC(i)                                                           \
  if constexpr (MB > i) {                                                        \
    _mm256_storeu_ps(c + i * ldc, a##i##0);                                      \
    _mm256_storeu_ps(c + i * ldc + 8, a##i##1);                                  \
  }
  DOTF_LOADC(0) DOTF_LOADC(1) DOTF_LOADC(2) DOTF_LOADC(3) DOTF_LOADC(4) DOTF_LOADC(5)
  for (int64_t k = 0; k < kc; ++k) {
    DOTF_STEP(0) DOTF_STEP(1) DOTF_STEP(2) DOTF_STEP(3)
  }
  DOTF_STOREC(0) DOTF_STOREC(1) DOTF_STOREC(2) DOTF_STOREC(3) DOTF_STOREC(4) DOTF_STOREC(5)
#undef DOTF_LOADC
#undef DOTF_FMA
#undef DOTF_STEP
#undef DOTF_STOREC
}

template <typename WT>
DOTF_AVX2 void avx2_micro_rows(int64_t mb, const WT* p, int64_t q, int64_t kc, const float* x, int64_t ldx, int64_t xseg,
                               float* c, int64_t ldc) {
  switch (mb) {
    case 6: return avx2_micro<WT, 6>(p, q, kc, x, ldx, xseg, c, ldc);
    case 5: return avx2_micro<WT, 5>(p, q, kc, x, ldx, xseg, c, ldc);
    case 4: return avx2_micro<WT, 4>(p, q, kc, x, ldx, xseg, c, ldc);
    case 3: return avx2_micro<WT, 3>(p, q, kc, x, ldx, xseg, c, ldc);
    case 2: return avx2_micro<WT, 2>(p, q, kc, x, ldx, xseg, c, ldc);
    default: return avx2_micro<WT, 1>(p, q, kc, x, ldx, xseg, c, ldc);
  }
}

// Panels [p_begin, p_end) of y = x W^T + bias. xs: x repacked as [4][q][M] with segment stride xseg;
// packed: [P][4 q][16]; y: [M, N] fp32.
template <typename WT>
DOTF_AVX2 void avx2_linear_panels(const float* xs, int64_t M, int64_t q, int64_t xseg, const WT* packed, int64_t N,
                                  const float* bias, float* y, int64_t p_begin, int64_t p_end) {
  alignas(32) float tail[kAvx2MaxM * kPanel];
  for (int64_t pi = p_begin; pi < p_end; ++pi) {
    const int64_t n0 = pi * kPanel, cols = std::min(kPanel, N - n0);
    const bool full = cols == kPanel;
    float* c = full ? y + n0 : tail;
    const int64_t ldc = full ? N : kPanel;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t j = 0; j < kPanel; ++j) c[m * ldc + j] = (bias && j < cols) ? bias[n0 + j] : 0.0f;
    }
    const WT* panel = packed + pi * kSegments * q * kPanel;
    for (int64_t k0 = 0; k0 < q; k0 += kChunk) {
      const int64_t kc = std::min(kChunk, q - k0);
      for (int64_t m0 = 0; m0 < M; m0 += kRowBlock) {
        avx2_micro_rows<WT>(std::min(kRowBlock, M - m0), panel + k0 * kPanel, q, kc, xs + k0 * M + m0, M, xseg,
                            c + m0 * ldc, ldc);
      }
    }
    if (!full) {
      for (int64_t m = 0; m < M; ++m) std::memcpy(y + m * N + n0, tail + m * kPanel, cols * sizeof(float));
    }
  }
}
#endif  // x86-64

// [N, K] -> [ceil(N/16), Kp, 16] with Kp = K rounded up to a multiple of 4, zero-padded, same dtype.
at::Tensor avx2_pack(const at::Tensor& w) {
  const int64_t N = w.size(0), K = w.size(1), P = (N + kPanel - 1) / kPanel;
  const int64_t Kp = (K + kSegments - 1) / kSegments * kSegments;
  at::Tensor padded = w;
  if (P * kPanel != N || Kp != K) {
    padded = at::zeros({P * kPanel, Kp}, w.options());
    padded.narrow(0, 0, N).narrow(1, 0, K).copy_(w);
  }
  // [P, 16, Kp] -> [P, Kp, 16]
  return padded.view({P, kPanel, Kp}).transpose(1, 2).contiguous();
}

at::Tensor avx2_linear(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias, int64_t N) {
#ifdef DOTF_HAVE_AVX2_KERNEL
  const at::Tensor xf = x.to(at::kFloat).contiguous();  // no copy for a contiguous fp32 x
  const int64_t M = xf.size(0), K = xf.size(1), P = packed.size(0), Kp = packed.size(1), q = Kp / kSegments;
  // x -> [4][q][M], k-major, zero past K. The segments sit 16 floats further apart than their size so
  // that power-of-two sizes do not map all four onto the same L1 sets.
  const int64_t xseg = q * M + 16;
  at::Tensor xs = at::empty({kSegments * xseg}, xf.options());
  {
    const float* src = xf.data_ptr<float>();
    float* dst = xs.data_ptr<float>();
    for (int64_t s = 0; s < kSegments; ++s) {
      for (int64_t k = 0; k < q; ++k) {
        const int64_t kk = s * q + k;
        float* d = dst + s * xseg + k * M;
        if (kk < K) {
          for (int64_t m = 0; m < M; ++m) d[m] = src[m * K + kk];
        } else {
          for (int64_t m = 0; m < M; ++m) d[m] = 0.0f;
        }
      }
    }
  }
  const float* xp = xs.data_ptr<float>();
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  at::Tensor y = at::empty({M, N}, xf.options());
  float* yp = y.data_ptr<float>();
  // Enough weight per task that thread start-up is paid back (>= 64 K weights).
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / (Kp * kPanel));
  if (packed.scalar_type() == at::kFloat) {
    const float* wp = packed.data_ptr<float>();
    at::parallel_for(0, P, grain, [&](int64_t b, int64_t e) { avx2_linear_panels<float>(xp, M, q, xseg, wp, N, bp, yp, b, e); });
  } else {
    const auto* wp = reinterpret_cast<const uint16_t*>(packed.data_ptr<at::BFloat16>());
    at::parallel_for(0, P, grain, [&](int64_t b, int64_t e) { avx2_linear_panels<uint16_t>(xp, M, q, xseg, wp, N, bp, yp, b, e); });
  }
  return y;
#else
  DOTF_CHECK(false, "linear path 'avx2' is not built for this architecture");
  return {};
#endif
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
    packed_ = avx2_pack(w);
    packed_bytes_ = packed_.nbytes();
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
      at::Tensor y = avx2_linear(x, packed_, packed_bias_, weight_.size(0));
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
  return weight_;
}

}  // namespace dotf
