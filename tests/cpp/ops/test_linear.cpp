// Every linear path against a float64 reference computed with at::linear on the same weights (for
// int8: the dequantized weights FBGEMM actually holds), over shapes, batch sizes M, bias on/off and
// 1 or 2 threads. Error metric: max |y - ref| / max |ref| over the output.
#include "core/check.h"
#include "ops/cpu/features.h"
#include "ops/linear.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/quantize_per_channel.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace dotf {
namespace {

struct Shape {
  int64_t out, in;
};

// SmolLM2-135M-like shapes (576 hidden, 1536 MLP), an odd one, and a slice of the vocab projection.
const std::vector<Shape> kShapes = {{576, 576}, {1536, 576}, {576, 1536}, {37, 19}, {4096, 576}};
const std::vector<int64_t> kMs = {1, 2, 6, 13, 16, 64};

// Bounds, each with its reason (measured worst cases are in the comments):
// fp32: fp32 accumulation over K <= 1536 terms against exact double; measured <= 2e-6.
constexpr double kTolFp32 = 1e-5;
// bf16: the output is rounded to bf16 (relative step 2^-8 = 3.9e-3 of the element); the reference
// uses the same bf16-rounded inputs and weights. Measured <= 3.5e-3.
constexpr double kTolBf16 = 2e-2;
// int8 vs the dequantized weights: only the per-tensor activation quantization is left (7-bit with
// reduce_range: step = range(x) / 127). Each x element errs by a uniform +-step/2, so an output errs
// with std step/sqrt(12) * ||w_row||, while the output itself has std ~ ||w_row|| * std(x). For randn x
// (range ~ 8.6 std at these sizes) that is ~2% of the output std, and the max error lands near 2% of
// the max output: measured up to 2.5e-2 over the sweep. 4e-2 leaves room for the tails; the error
// model itself is checked tightly in Int8ErrorIsActivationRoundingOnly.
constexpr double kTolInt8 = 4e-2;
// int8_avx2 vs the dequantized weights: x is rounded per row to int16 (step = max|x| / 32767) and the
// integer products are exact, so an output errs with std step/sqrt(12) * ||w_row||, ~1e-5 of the max
// output for randn x; measured up to 3.1e-5. The error model is checked in Int8Avx2ErrorIsInt16Rounding.
constexpr double kTolInt8Avx2 = 1e-4;

struct ThreadGuard {
  int saved = at::get_num_threads();
  explicit ThreadGuard(int n) { at::set_num_threads(n); }
  ~ThreadGuard() { at::set_num_threads(saved); }
};

double rel_err(const at::Tensor& y, const at::Tensor& ref) {
  const double denom = ref.abs().max().item<double>();
  return (y.to(at::kDouble) - ref).abs().max().item<double>() / (denom > 0 ? denom : 1.0);
}

at::Tensor randn(std::vector<int64_t> shape, at::ScalarType dt, double scale = 1.0) {
  return (at::randn(shape, at::TensorOptions().dtype(at::kFloat)) * scale).to(dt);
}

// One full sweep of a path and dtype over shapes x M x bias x threads; returns the worst error.
double sweep(LinearPath path, at::ScalarType dt, double tol, const std::vector<Shape>& shapes = kShapes,
             const std::vector<int64_t>& ms = kMs) {
  double worst = 0;
  for (const Shape& s : shapes) {
    for (bool with_bias : {false, true}) {
      at::manual_seed(s.out * 31 + s.in + with_bias);
      const at::Tensor w = randn({s.out, s.in}, dt, 0.05);
      std::optional<at::Tensor> b;
      if (with_bias) b = randn({s.out}, dt, 0.5);
      const Linear lin(w, b, path);
      EXPECT_EQ(lin.path(), path);
      const at::Tensor w_ref = lin.effective_weight().to(at::kDouble);
      const std::optional<at::Tensor> b_ref = b ? std::optional<at::Tensor>(b->to(at::kDouble)) : std::nullopt;
      for (int threads : {1, 2}) {
        ThreadGuard tg(threads);
        for (int64_t m : ms) {
          SCOPED_TRACE(to_string(path) + " " + std::string(c10::toString(dt)) + " " + std::to_string(s.out) + "x" +
                       std::to_string(s.in) + " M=" + std::to_string(m) + (with_bias ? " bias" : "") + " threads=" +
                       std::to_string(threads));
          const at::Tensor x = randn({m, s.in}, dt);
          const at::Tensor y = lin(x);
          EXPECT_EQ(y.scalar_type(), dt);
          if (y.sizes() != c10::IntArrayRef{m, s.out}) {
            ADD_FAILURE() << "output shape " << y.sizes();
            continue;
          }
          const at::Tensor ref = at::linear(x.to(at::kDouble), w_ref, b_ref);
          const double e = rel_err(y, ref);
          EXPECT_LE(e, tol);
          worst = std::max(worst, e);
        }
      }
    }
  }
  return worst;
}

// sweep() with the worst error kept as a test property (in the XML report).
double recorded_sweep(LinearPath path, at::ScalarType dt, double tol) {
  const double worst = sweep(path, dt, tol);
  ::testing::Test::RecordProperty("worst_rel_err", std::to_string(worst));
  return worst;
}

// z: errors divided by their predicted standard deviation. Passes when they look like that noise: mean
// square within 20% of 1 and no 6-sigma outlier.
void expect_unit_noise(const at::Tensor& z, const std::string& what) {
  const double ms = z.pow(2).mean().item<double>();
  const double zmax = z.abs().max().item<double>();
  EXPECT_GT(ms, 0.8) << what;
  EXPECT_LT(ms, 1.2) << what;
  EXPECT_LT(zmax, 6.0) << what;
  std::cout << "[ info ] " << what << ": normalized mean square " << ms << ", max |z| " << zmax << "\n";
}

TEST(Linear, AtenFp32MatchesFloat64) { EXPECT_LE(sweep(LinearPath::Aten, at::kFloat, kTolFp32), kTolFp32); }

TEST(Linear, OneDnnFp32MatchesFloat64) {
  recorded_sweep(LinearPath::OneDnnPacked, at::kFloat, kTolFp32);
}

TEST(Linear, OneDnnBf16MatchesFloat64) {
  recorded_sweep(LinearPath::OneDnnPacked, at::kBFloat16, kTolBf16);
}

#define SKIP_WITHOUT_AVX2() \
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "this CPU lacks AVX2/FMA"

TEST(Linear, Avx2Fp32MatchesFloat64) {
  SKIP_WITHOUT_AVX2();
  recorded_sweep(LinearPath::Avx2Packed, at::kFloat, kTolFp32);
}

TEST(Linear, Avx2Bf16MatchesFloat64) {
  SKIP_WITHOUT_AVX2();
  recorded_sweep(LinearPath::Avx2Packed, at::kBFloat16, kTolBf16);
}

TEST(Linear, Avx2EveryRowCountAndTailPanel) {
  // Every M from 1 to past kAvx2MaxM (each micro-kernel row count 1..6 (int8: 1..4), several row
  // blocks, then Avx2Packed's at::linear fallback), out sizes that leave a partial last panel, K not a
  // multiple of the chunk. The int8 path is checked against the weights it holds (q * scale).
  SKIP_WITHOUT_AVX2();
  for (Shape s : {Shape{37, 19}, Shape{100, 300}, Shape{16, 520}, Shape{1, 8}}) {
    at::manual_seed(s.out + s.in);
    for (LinearPath path : {LinearPath::Avx2Packed, LinearPath::Int8Avx2}) {
      for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
        const at::Tensor w = randn({s.out, s.in}, dt, 0.1);
        const at::Tensor b = randn({s.out}, dt);
        const Linear lin(w, b, path);
        const at::Tensor w_ref = lin.effective_weight().to(at::kDouble);
        for (int64_t m = 1; m <= kAvx2MaxM + 2; ++m) {
          SCOPED_TRACE(to_string(path) + " " + std::to_string(s.out) + "x" + std::to_string(s.in) + " " +
                       c10::toString(dt) + " M=" + std::to_string(m));
          const at::Tensor x = randn({m, s.in}, dt);
          const at::Tensor ref = at::linear(x.to(at::kDouble), w_ref, b.to(at::kDouble));
          const at::Tensor y = lin(x);
          EXPECT_EQ(y.scalar_type(), dt);
          const double tol = dt == at::kBFloat16 ? kTolBf16 : path == LinearPath::Int8Avx2 ? kTolInt8Avx2 : kTolFp32;
          EXPECT_LE(rel_err(y, ref), tol);
        }
      }
    }
  }
}

TEST(Linear, Avx2RowsAreBatchAndThreadInvariant) {
  // A verify batch's rows are bitwise the rows a decode step computes: same summation order for any
  // M <= kAvx2MaxM and any thread count.
  // int8_avx2 too: x is quantized per row and its integer sums are exact.
  SKIP_WITHOUT_AVX2();
  for (auto [path, dt] : {std::pair{LinearPath::Avx2Packed, at::kFloat}, std::pair{LinearPath::Avx2Packed, at::kBFloat16},
                          std::pair{LinearPath::Int8Avx2, at::kFloat}}) {
    at::manual_seed(21);
    const at::Tensor w = randn({200, 600}, dt, 0.05);
    const at::Tensor b = randn({200}, dt);
    const Linear lin(w, b, path);
    const at::Tensor x = randn({kAvx2MaxM, 600}, dt);
    at::Tensor full;
    {
      ThreadGuard tg(1);
      full = lin(x);
    }
    for (int threads : {1, 2}) {
      ThreadGuard tg(threads);
      for (int64_t m = 1; m <= kAvx2MaxM; ++m) {
        const at::Tensor part = lin(x.narrow(0, 0, m));
        EXPECT_TRUE(at::equal(part, full.narrow(0, 0, m)))
            << to_string(path) << " " << c10::toString(dt) << " M=" << m << " threads=" << threads;
      }
      // And a row on its own, from the middle of the batch.
      EXPECT_TRUE(at::equal(lin(x.narrow(0, 7, 1)), full.narrow(0, 7, 1))) << c10::toString(dt);
    }
  }
}

TEST(Linear, Avx2HigherRankInputFallsBackToAten) {
  SKIP_WITHOUT_AVX2();
  const at::Tensor w = randn({24, 40}, at::kFloat, 0.1);
  const Linear lin(w, std::nullopt, LinearPath::Avx2Packed);
  const at::Tensor x = randn({2, 3, 40}, at::kFloat);
  EXPECT_LE(rel_err(lin(x), at::linear(x.to(at::kDouble), w.to(at::kDouble))), kTolFp32);
  EXPECT_THROW(lin(randn({2, 41}, at::kFloat)), ValueError);
}

TEST(Linear, AtenBf16MatchesFloat64) { sweep(LinearPath::Aten, at::kBFloat16, kTolBf16); }

TEST(Linear, Int8Fp32MatchesDequantizedFloat64) {
  const double worst = recorded_sweep(LinearPath::Int8Dynamic, at::kFloat, kTolInt8);
  // The bound is not vacuous: the error is real (activations are quantized), just bounded.
  EXPECT_GT(worst, 1e-4);
}

TEST(Linear, Int8Avx2MatchesDequantizedFloat64) {
  SKIP_WITHOUT_AVX2();
  recorded_sweep(LinearPath::Int8Avx2, at::kFloat, kTolInt8Avx2);
}

TEST(Linear, Int8Avx2ErrorIsInt16Rounding) {
  // Against the dequantized weights the only error left is the int16 rounding of x, per row:
  // per output, std = step_m / sqrt(12) * ||w_row||_2 with step_m = max|x_m| / 32767. A wrong scale,
  // int32 overflow, a lost flush or a dropped bias would move the normalized mean square off 1.
  SKIP_WITHOUT_AVX2();
  ThreadGuard tg(1);
  for (Shape s : {Shape{1536, 576}, Shape{576, 1536}, Shape{100, 4864}}) {
    at::manual_seed(13);
    const at::Tensor w = randn({s.out, s.in}, at::kFloat, 0.05);
    const at::Tensor b = randn({s.out}, at::kFloat, 0.5);
    const Linear lin(w, b, LinearPath::Int8Avx2);
    const at::Tensor wq = lin.effective_weight().to(at::kDouble);
    const at::Tensor x = randn({16, s.in}, at::kFloat) * at::arange(1, 17, at::kFloat).unsqueeze(1);  // rows of different scale
    const at::Tensor step = std::get<0>(x.abs().max(1)).to(at::kDouble) / 32767.0;                 // [M]
    const at::Tensor sigma = step.unsqueeze(1) * (wq.pow(2).sum(1).sqrt() / std::sqrt(12.0)).unsqueeze(0);  // [M, out]
    const at::Tensor z = (lin(x).to(at::kDouble) - at::linear(x.to(at::kDouble), wq, b.to(at::kDouble))) / sigma;
    expect_unit_noise(z, "int8_avx2 " + std::to_string(s.out) + "x" + std::to_string(s.in));
  }
}

TEST(Linear, Int8Avx2SumsDoNotOverflow) {
  // Every weight and activation at full scale, same sign: the largest possible int32 chunk sums.
  SKIP_WITHOUT_AVX2();
  for (int64_t k : {int64_t(4096), int64_t(8192)}) {
    const Linear lin(at::ones({16, k}), std::nullopt, LinearPath::Int8Avx2);
    const at::Tensor y = lin(at::full({2, k}, -3.0f));
    EXPECT_NEAR(y[0][0].item<double>(), -3.0 * k, 3.0 * k * 1e-6) << k;
    EXPECT_NEAR(y[1][15].item<double>(), -3.0 * k, 3.0 * k * 1e-6) << k;
  }
}

TEST(Linear, Int8Avx512VnniEqualsAvx2BitForBit) {
  // The kernel's AVX-512 VNNI build (12-row blocks, vpdpwssd) against its AVX2 build (6-row blocks,
  // vpmaddwd + vpaddd) on the same CPU: the same integer sums and flushes, so the same bits, for every
  // row count (one and two 12-row blocks, tails), tail panels, odd K, and full-scale sums.
  if (!dotf::cpu_has_avx512_vnni()) GTEST_SKIP() << "this CPU lacks AVX-512 F/VL/VNNI: the AVX2 build runs alone";
  struct Restore { ~Restore() { dotf::avx512_kernels_allowed() = true; } } restore;
  for (Shape s : {Shape{37, 19}, Shape{100, 300}, Shape{49, 1536}, Shape{16, 8192}}) {
    at::manual_seed(s.out * 7 + s.in);
    const at::Tensor w = s.in == 8192 ? at::ones({s.out, s.in}) : randn({s.out, s.in}, at::kFloat, 0.1);
    const at::Tensor b = randn({s.out}, at::kFloat);
    const Linear lin(w, b, LinearPath::Int8Avx2);
    for (int64_t m : std::vector<int64_t>{1, 2, 5, 6, 7, 9, 12, 13, 24, 25, kAvx2MaxM}) {
      SCOPED_TRACE(std::to_string(s.out) + "x" + std::to_string(s.in) + " M=" + std::to_string(m));
      const at::Tensor x = s.in == 8192 ? at::full({m, s.in}, -3.0f) : randn({m, s.in}, at::kFloat);
      dotf::avx512_kernels_allowed() = true;
      EXPECT_STREQ(dotf::int8_linear_isa(), "avx512_vnni");
      const at::Tensor vnni = lin(x);
      dotf::avx512_kernels_allowed() = false;
      EXPECT_STREQ(dotf::int8_linear_isa(), "avx2");
      const at::Tensor avx2 = lin(x);
      EXPECT_TRUE(at::equal(vnni, avx2));
    }
  }
}

TEST(Linear, Int8Avx2IsCloserToTheFullWeightsThanFbgemm) {
  // The reason it is the draft path: 16-bit activations, so its outputs sit closer to the original
  // fp32 layer's than FBGEMM's dynamic int8 (same weight quantization, 7-bit activations).
  SKIP_WITHOUT_AVX2();
  ThreadGuard tg(1);
  at::manual_seed(17);
  const at::Tensor w = randn({1536, 576}, at::kFloat, 0.05);
  const at::Tensor x = randn({8, 576}, at::kFloat);
  const at::Tensor ref = at::linear(x.to(at::kDouble), w.to(at::kDouble));
  const double ours = rel_err(Linear(w, std::nullopt, LinearPath::Int8Avx2)(x), ref);
  const double fbgemm = rel_err(Linear(w, std::nullopt, LinearPath::Int8Dynamic)(x), ref);
  std::cout << "[ info ] vs the fp32 layer: int8_avx2 " << ours << ", int8 (FBGEMM) " << fbgemm << "\n";
  EXPECT_LT(ours, 0.5 * fbgemm);
  EXPECT_GT(ours, 1e-4);  // it is quantized: not the fp32 layer
}

TEST(Linear, Int8Avx2TakesAnyFloatInputAndZeroRows) {
  // fp64 and bf16 models draft through it: x is computed in fp32 and returned in its own dtype. An
  // all-zero weight row (scale clamped to FLT_EPSILON) gives exactly the bias; an all-zero x row too;
  // a non-finite x row gives a non-finite output row (as a float kernel would), not garbage.
  SKIP_WITHOUT_AVX2();
  at::manual_seed(19);
  at::Tensor w = randn({40, 24}, at::kFloat, 0.1);
  w[3].zero_();
  const at::Tensor b = randn({40}, at::kFloat);
  const Linear lin(w, b, LinearPath::Int8Avx2);
  const at::Tensor w_ref = lin.effective_weight().to(at::kDouble);
  for (at::ScalarType dt : {at::kDouble, at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::Tensor x = randn({3, 24}, dt);
    const at::Tensor y = lin(x);
    EXPECT_EQ(y.scalar_type(), dt);
    const double tol = dt == at::kFloat || dt == at::kDouble ? kTolInt8Avx2 : kTolBf16;
    EXPECT_LE(rel_err(y, at::linear(x.to(at::kDouble), w_ref, b.to(at::kDouble))), tol) << dt;
    EXPECT_TRUE(at::equal(y.select(1, 3).to(at::kFloat), b[3].expand({3}).to(dt).to(at::kFloat))) << dt;
  }
  EXPECT_TRUE(at::equal(lin(at::zeros({1, 24})), b.unsqueeze(0)));
  at::Tensor bad = randn({3, 24}, at::kFloat);
  bad[1][5] = std::numeric_limits<float>::infinity();
  bad[2][23] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor yb = lin(bad);
  EXPECT_TRUE(yb[0].isfinite().all().item<bool>());
  EXPECT_FALSE(yb[1].isfinite().any().item<bool>());
  EXPECT_FALSE(yb[2].isfinite().any().item<bool>());
  EXPECT_THROW(lin(randn({3, 25}, at::kFloat)), ValueError);
  const at::Tensor x3 = randn({2, 3, 24}, at::kFloat);  // leading dimensions are kept
  const at::Tensor y3 = lin(x3);
  ASSERT_EQ(y3.sizes(), (c10::IntArrayRef{2, 3, 40}));
  EXPECT_LE(rel_err(y3, at::linear(x3.to(at::kDouble), w_ref, b.to(at::kDouble))), kTolInt8Avx2);
}

TEST(Linear, Int8Bf16InputMatchesDequantizedFloat64) {
  // bf16 in, bf16 out; computed in fp32 inside. The bf16 rounding of the output adds 2^-9.
  sweep(LinearPath::Int8Dynamic, at::kBFloat16, kTolInt8 + 4e-3, {{576, 576}, {37, 19}}, {1, 6, 16});
}

TEST(Linear, LargeVocabShapeAllPaths) {
  // SmolLM2's lm_head shape, few M (the reference in double is the slow part).
  ThreadGuard tg(2);
  at::manual_seed(7);
  const at::Tensor w = randn({49152, 576}, at::kFloat, 0.05);
  for (LinearPath p : {LinearPath::Aten, LinearPath::OneDnnPacked, LinearPath::Int8Dynamic, LinearPath::Avx2Packed,
                       LinearPath::Int8Avx2}) {
    if ((p == LinearPath::Avx2Packed || p == LinearPath::Int8Avx2) && !cpu_has_avx2_fma()) continue;
    const Linear lin(w, std::nullopt, p);
    const at::Tensor w_ref = lin.effective_weight().to(at::kDouble);
    for (int64_t m : {1, 6}) {
      SCOPED_TRACE(to_string(p) + " M=" + std::to_string(m));
      const at::Tensor x = randn({m, 576}, at::kFloat);
      const double tol = p == LinearPath::Int8Dynamic ? kTolInt8 : p == LinearPath::Int8Avx2 ? kTolInt8Avx2 : kTolFp32;
      EXPECT_LE(rel_err(lin(x), at::linear(x.to(at::kDouble), w_ref)), tol);
    }
  }
}

TEST(Linear, Int8ErrorIsActivationRoundingOnly) {
  // Against the dequantized weights, the int8 path's error should be exactly the activation rounding
  // noise: per output, std = step/sqrt(12) * ||w_row||_2 with step = range(x, including 0) / 127.
  // A wrong scale, 8-bit activations (4x less noise power), saturation or a dropped bias would move
  // the normalized mean square away from 1 or produce a > 6 sigma outlier.
  ThreadGuard tg(1);
  for (Shape s : {Shape{1536, 576}, Shape{576, 1536}}) {
    at::manual_seed(11);
    const at::Tensor w = randn({s.out, s.in}, at::kFloat, 0.05);
    const at::Tensor b = randn({s.out}, at::kFloat, 0.5);
    const Linear lin(w, b, LinearPath::Int8Dynamic);
    const at::Tensor wq = lin.effective_weight().to(at::kDouble);
    const at::Tensor x = randn({16, s.in}, at::kFloat);
    const double step = (std::max(x.max().item<double>(), 0.0) - std::min(x.min().item<double>(), 0.0)) / 127.0;
    const at::Tensor sigma = wq.pow(2).sum(1).sqrt() * (step / std::sqrt(12.0));  // [out]
    const at::Tensor z = (lin(x).to(at::kDouble) - at::linear(x.to(at::kDouble), wq, b.to(at::kDouble))) / sigma;
    expect_unit_noise(z, "int8 " + std::to_string(s.out) + "x" + std::to_string(s.in));
  }
}

TEST(Linear, Int8QuantizationIsSymmetricPerOutputChannel) {
  // Rows of very different magnitude: per-channel scales keep each row's relative error small,
  // and each row's largest weight is represented exactly (scale = max|w_row| / 127). Both int8 paths
  // quantize the same way, so they hold the same weights.
  at::manual_seed(3);
  at::Tensor w = randn({8, 64}, at::kFloat);
  w = w * at::arange(1, 9, at::kFloat).pow(4).unsqueeze(1);  // row scales 1 .. 4096
  const at::Tensor row_max = std::get<0>(w.abs().max(1));
  std::vector<at::Tensor> held;
  for (LinearPath p : {LinearPath::Int8Dynamic, LinearPath::Int8Avx2}) {
    if (p == LinearPath::Int8Avx2 && !cpu_has_avx2_fma()) continue;
    const at::Tensor wq = Linear(w, std::nullopt, p).effective_weight();
    const at::Tensor err = (wq - w).abs();
    // |w - q(w)| <= scale / 2 per row.
    EXPECT_TRUE((std::get<0>(err.max(1)) <= row_max / 127.0 * 0.5001).all().item<bool>()) << to_string(p);
    EXPECT_TRUE(at::allclose(std::get<0>(wq.abs().max(1)), row_max, 1e-6, 0)) << to_string(p);
    held.push_back(wq);
  }
  if (held.size() == 2) EXPECT_TRUE(at::allclose(held[0], held[1], 1e-6, 0));
}

TEST(Linear, Int8WithoutReduceRangeSaturatesOnAvx2) {
  // Why Int8Dynamic passes reduce_range=true: all weights at +127 and all activations at the top of
  // an 8-bit range overflow FBGEMM's int16 pair sums (vpmaddubsw) on CPUs without AVX512-VNNI.
  // With reduce_range the same product is exact up to quantization.
  const int64_t k = 256;
  const at::Tensor w = at::ones({16, k});
  at::Tensor x = at::full({1, k}, 1.0f);
  x[0][0].fill_(0.0);  // a range [0, 1]: every other activation quantizes to the top code
  const Linear lin(w, std::nullopt, LinearPath::Int8Dynamic);
  const double ref = k - 1;
  EXPECT_NEAR(lin(x)[0][0].item<double>(), ref, ref * 1e-2);

  // The same packed weights called with reduce_range=false, straight through the dispatcher.
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_dynamic", "");
  const auto prepack = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::linear_prepack", "");
  const at::Tensor qw = at::quantize_per_channel(w, at::full({16}, 1.0 / 127, at::kDouble),
                                                 at::zeros({16}, at::kLong), 0, at::kQInt8);
  torch::jit::Stack st{qw, c10::IValue()};
  prepack.callBoxed(&st);
  const c10::IValue packed = st.at(0);
  torch::jit::Stack call{x, packed, false};
  op.callBoxed(&call);
  const double no_reduce = call.at(0).toTensor()[0][0].item<double>();
  // Documents the hazard; on AVX512-VNNI CPUs FBGEMM uses vpdpbusd and does not saturate.
  RecordProperty("no_reduce_range_result", std::to_string(no_reduce));
  std::cout << "[ info ] int8 reduce_range=false on an all-max product: " << no_reduce << " (exact " << ref << ")\n";
}

TEST(Linear, NonContiguousInput) {
  at::manual_seed(5);
  const at::Tensor w = randn({96, 64}, at::kFloat, 0.1);
  const at::Tensor xt = randn({64, 6}, at::kFloat).t();  // [6, 64], not contiguous
  ASSERT_FALSE(xt.is_contiguous());
  const at::Tensor ref = at::linear(xt.to(at::kDouble), w.to(at::kDouble));
  for (LinearPath p : {LinearPath::Aten, LinearPath::OneDnnPacked, LinearPath::Avx2Packed}) {
    if (p == LinearPath::Avx2Packed && !cpu_has_avx2_fma()) continue;
    EXPECT_LE(rel_err(Linear(w, std::nullopt, p)(xt), ref), kTolFp32) << to_string(p);
  }
  if (cpu_has_avx2_fma()) {
    const Linear q8(w, std::nullopt, LinearPath::Int8Avx2);
    EXPECT_LE(rel_err(q8(xt), at::linear(xt.to(at::kDouble), q8.effective_weight().to(at::kDouble))), kTolInt8Avx2);
  }
  const Linear q(w, std::nullopt, LinearPath::Int8Dynamic);
  EXPECT_LE(rel_err(q(xt), at::linear(xt.to(at::kDouble), q.effective_weight().to(at::kDouble))), kTolInt8);
}

TEST(Linear, ExtraBytesCountThePackedCopy) {
  const int64_t n = 96, k = 64;
  const at::Tensor w = randn({n, k}, at::kFloat);
  EXPECT_EQ(Linear(w, std::nullopt, LinearPath::Aten).extra_bytes(), 0);
  EXPECT_EQ(Linear(w, std::nullopt, LinearPath::OneDnnPacked).extra_bytes(), n * k * 4);
  if (cpu_has_avx2_fma()) {
    // Padded to whole 16-column panels: 96 is already a multiple; 100 is padded to 112.
    EXPECT_EQ(Linear(w, std::nullopt, LinearPath::Avx2Packed).extra_bytes(), n * k * 4);
    EXPECT_EQ(Linear(w.to(at::kBFloat16), std::nullopt, LinearPath::Avx2Packed).extra_bytes(), n * k * 2);
    EXPECT_EQ(Linear(randn({100, k}, at::kFloat), std::nullopt, LinearPath::Avx2Packed).extra_bytes(), 112 * k * 4);
    // int8 panels + an fp32 scale per (padded) output channel.
    EXPECT_EQ(Linear(w, std::nullopt, LinearPath::Int8Avx2).extra_bytes(), n * k + n * 4);
    EXPECT_EQ(Linear(randn({100, k}, at::kFloat), std::nullopt, LinearPath::Int8Avx2).extra_bytes(), 112 * k + 112 * 4);
  }
  const Linear b16(w.to(at::kBFloat16), std::nullopt, LinearPath::OneDnnPacked);
  EXPECT_EQ(b16.extra_bytes(), n * k * (b16.packed_as_fp32() ? 4 : 2));
  // int8 weight + per channel: float scale, int32 zero point, int32 column offset.
  EXPECT_EQ(Linear(w, std::nullopt, LinearPath::Int8Dynamic).extra_bytes(), n * k + n * 12);
}

TEST(Linear, WithPathSharesTheOriginalWeight) {
  const at::Tensor w = randn({32, 16}, at::kFloat);
  const at::Tensor b = randn({32}, at::kFloat);
  const Linear full(w, b, LinearPath::OneDnnPacked);
  const Linear draft = full.with_path(LinearPath::Int8Dynamic);
  EXPECT_EQ(draft.path(), LinearPath::Int8Dynamic);
  EXPECT_EQ(draft.weight().data_ptr(), w.data_ptr());
  ASSERT_TRUE(draft.bias().has_value());
  EXPECT_EQ(draft.bias()->data_ptr(), b.data_ptr());
  const Linear back = draft.with_path(LinearPath::Aten);
  EXPECT_EQ(back.extra_bytes(), 0);
  EXPECT_TRUE(at::equal(back(w), at::linear(w, w, b)));
}

TEST(Linear, PackedPathsRefuseNonCpuWeights) {
  // A meta tensor stands in for a CUDA weight on a CPU-only build (same check: device must be CPU).
  const at::Tensor w = at::empty({8, 8}, at::TensorOptions().device(at::kMeta));
  for (LinearPath p : {LinearPath::OneDnnPacked, LinearPath::Int8Dynamic, LinearPath::Avx2Packed, LinearPath::Int8Avx2}) {
    try {
      Linear(w, std::nullopt, p);
      ADD_FAILURE() << "no error for " << to_string(p);
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("CPU only"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(Linear(w, std::nullopt, LinearPath::Aten));
}

TEST(Linear, PackedFloatPathsRefuseHalfAndDouble) {
  for (at::ScalarType dt : {at::kHalf, at::kDouble}) {
    EXPECT_THROW(Linear(randn({8, 8}, dt), std::nullopt, LinearPath::OneDnnPacked), TypeError) << dt;
    EXPECT_THROW(Linear(randn({8, 8}, dt), std::nullopt, LinearPath::Avx2Packed), TypeError) << dt;
  }
}

TEST(Linear, OneDnnRefusesInputOfAnotherDtype) {
  const Linear lin(randn({8, 8}, at::kFloat), std::nullopt, LinearPath::OneDnnPacked);
  EXPECT_THROW(lin(randn({2, 8}, at::kBFloat16)), TypeError);
  if (cpu_has_avx2_fma()) {
    const Linear a(randn({8, 8}, at::kFloat), std::nullopt, LinearPath::Avx2Packed);
    EXPECT_THROW(a(randn({2, 8}, at::kBFloat16)), TypeError);
  }
}

TEST(Linear, BadShapesAreRefused) {
  EXPECT_THROW(Linear(randn({8}, at::kFloat), std::nullopt, LinearPath::OneDnnPacked), TypeError);
  EXPECT_THROW(Linear(randn({8, 4}, at::kFloat), randn({7}, at::kFloat), LinearPath::Int8Dynamic), ValueError);
}

TEST(Linear, PathNamesRoundTrip) {
  for (LinearPath p : {LinearPath::Aten, LinearPath::OneDnnPacked, LinearPath::Int8Dynamic, LinearPath::Avx2Packed,
                       LinearPath::Int8Avx2}) {
    EXPECT_EQ(linear_path_from_string(to_string(p)), p);
  }
  EXPECT_THROW(linear_path_from_string("mkl"), ValueError);
}

TEST(Linear, DefaultPathPerDtypeAndDevice) {
  EXPECT_EQ(default_linear_path(at::kHalf, at::kCPU), LinearPath::Aten);
  EXPECT_EQ(default_linear_path(at::kDouble, at::kCPU), LinearPath::Aten);
  EXPECT_EQ(default_linear_path(at::kFloat, at::Device(at::kCUDA, 0)), LinearPath::Aten);
  EXPECT_EQ(default_linear_path(at::kBFloat16, at::Device(at::kCUDA, 0)), LinearPath::Aten);
  const LinearPath cpu_float = cpu_has_avx2_fma() ? LinearPath::Avx2Packed : LinearPath::Aten;
  EXPECT_EQ(default_linear_path(at::kFloat, at::kCPU), cpu_float);
  EXPECT_EQ(default_linear_path(at::kBFloat16, at::kCPU), cpu_float);
  EXPECT_NE(default_linear_path(at::kFloat, at::kCPU), LinearPath::Int8Dynamic);
  EXPECT_NE(default_linear_path(at::kBFloat16, at::kCPU), LinearPath::Int8Dynamic);
  EXPECT_NE(default_linear_path(at::kFloat, at::kCPU), LinearPath::Int8Avx2);
  EXPECT_EQ(int8_draft_path(), cpu_has_avx2_fma() ? LinearPath::Int8Avx2 : LinearPath::Int8Dynamic);
  // Whatever it picks must construct for that dtype on CPU.
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    EXPECT_NO_THROW(Linear(randn({8, 8}, dt), std::nullopt, default_linear_path(dt, at::kCPU))) << dt;
  }
}

}  // namespace
}  // namespace dotf
