// The LM-head screen (ops/linear_screen.h): the int8 bound holds for every output, the kept outputs
// are bitwise the layer's and include every output >= the k-th largest (ties included), the
// consumers (argmax_top1, warped_probabilities) give the same results as on the full product, and
// everything the screen cannot vouch for runs the full product.
#include "core/check.h"
#include "ops/cpu/features.h"
#include "ops/linear.h"
#include "ops/linear_screen.h"
#include "ops/sample.h"
#include "ops/sampling.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/isinf.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace dotf {
namespace {

#define SKIP_WITHOUT_AVX2() \
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "this CPU lacks AVX2/FMA"

struct ThreadGuard {
  int saved = at::get_num_threads();
  explicit ThreadGuard(int n) { at::set_num_threads(n); }
  ~ThreadGuard() { at::set_num_threads(saved); }
};

at::Tensor randn(std::vector<int64_t> shape, double scale = 1.0) {
  return at::randn(shape, at::TensorOptions().dtype(at::kFloat)) * scale;
}

// An LM-head-like weight: rows of different norms (a few 10x larger, a few all zero), a few large
// columns (outlier features).
at::Tensor head_weight(int64_t N, int64_t K) {
  at::Tensor w = randn({N, K}, 0.05) * (randn({N, 1}, 0.5).exp());
  w.narrow(0, 0, std::min<int64_t>(N, 3)).mul_(10);
  if (N > 10) w.narrow(0, 7, 2).zero_();
  w.narrow(1, 0, std::min<int64_t>(K, 2)).mul_(8);
  return w.contiguous();
}

// Hidden states: unit-scale rows with a few outlier features, as after a final RMSNorm.
at::Tensor hidden(int64_t M, int64_t K, double scale = 1.0) {
  at::Tensor x = randn({M, K}, scale);
  x.narrow(1, 0, std::min<int64_t>(K, 3)).mul_(20);
  return x.contiguous();
}

// Every output of `full` that is >= its row's k-th largest is in `got` with the same bits; every
// other entry of `got` is -inf or the same bits. Returns how many entries were left at -inf.
int64_t expect_top_k_exact(const at::Tensor& got, const at::Tensor& full, int64_t k) {
  EXPECT_EQ(got.sizes(), full.sizes());
  const at::Tensor g = got.to(at::kFloat).contiguous(), f = full.to(at::kFloat).contiguous();
  const int64_t M = f.size(0), N = f.size(1);
  int64_t left_out = 0;
  for (int64_t m = 0; m < M; ++m) {
    const float kth = std::get<0>(at::topk(f[m], k)).min().item<float>();
    const float* gr = g.data_ptr<float>() + m * N;
    const float* fr = f.data_ptr<float>() + m * N;
    for (int64_t n = 0; n < N; ++n) {
      if (gr[n] == -std::numeric_limits<float>::infinity()) {
        EXPECT_LT(fr[n], kth) << "row " << m << " output " << n << " was left out";
        ++left_out;
      } else {
        EXPECT_EQ(gr[n], fr[n]) << "row " << m << " output " << n;
      }
    }
  }
  return left_out;
}

struct Case {
  int64_t N, K;
  bool bias;
};

TEST(LinearScreen, BoundHoldsForEveryOutput) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(0);
  double worst = 0;  // max |f - l8| / bound
  int64_t outputs = 0;
  for (const Case c : {Case{4096, 576, false}, Case{1000, 896, true}, Case{37, 19, false}, Case{2048, 64, true},
                       Case{513, 1536, false}}) {
    for (const double scale : {1.0, 1e-3, 300.0}) {
      const Linear layer(head_weight(c.N, c.K), c.bias ? std::optional(randn({c.N})) : std::nullopt,
                         LinearPath::Avx2Packed);
      const LinearScreen screen(layer);
      for (const int64_t M : {1, 7, 9}) {
        const at::Tensor x = hidden(M, c.K, scale);
        const at::Tensor f = layer(x).to(at::kDouble);
        const auto [l8, bound] = screen.bounds(x);
        ASSERT_TRUE(l8.defined());
        const at::Tensor err = (f - l8.to(at::kDouble)).abs();
        EXPECT_TRUE((err <= bound).all().item<bool>()) << c.N << "x" << c.K << " scale " << scale << " M " << M;
        worst = std::max(worst, (err / bound).max().item<double>());
        outputs += f.numel();
      }
    }
  }
  // How much of the bound real rounding uses (the weight term is a worst case over signs).
  std::cout << "[ screen ] " << outputs << " outputs, max |exact - int8| / bound = " << worst << "\n";
}

TEST(LinearScreen, KeepsTheTopKBitwise) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(1);
  for (const int threads : {1, 2}) {
    ThreadGuard guard(threads);
    for (const Case c : {Case{4096, 576, false}, Case{3001, 128, true}}) {
      const Linear layer(head_weight(c.N, c.K), c.bias ? std::optional(randn({c.N})) : std::nullopt,
                         LinearPath::Avx2Packed);
      const LinearScreen screen(layer);
      for (const int64_t M : {1, 3, 9, 17}) {
        const at::Tensor x = hidden(M, c.K);
        const at::Tensor full = layer(x);
        for (const int64_t k : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{50}, kScreenMaxTopK}) {
          const at::Tensor got = screen.top_k(x, k);
          const int64_t left_out = expect_top_k_exact(got, full, k);
          if (k <= 5) EXPECT_GT(left_out, full.numel() / 2) << "the screen kept most outputs: k " << k;
          // The consumers read the same thing from both.
          EXPECT_TRUE(at::equal(argmax_top1(got, false).first, argmax_top1(full, false).first));
          const SamplingParams sp{0.7, k, 0.9, 0.0};
          EXPECT_TRUE(at::equal(warped_probabilities(got, sp), warped_probabilities(full, sp))) << "k " << k;
        }
      }
    }
  }
}

// Scales row `top` of the head weight w [N, K] so that x's first row [K] gets a logit of 3 max|logits|
// there: the clear maximum, whatever the other rows hold.
void make_clear_maximum(at::Tensor& w, const at::Tensor& x, int64_t top) {
  const at::Tensor logits = at::linear(x[0].unsqueeze(0), w).squeeze(0);
  w[top].mul_(3 * logits.abs().max() / logits[top]);
}

TEST(LinearScreen, KeepsEveryTie) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(2);
  const int64_t N = 4096, K = 256;
  at::Tensor w = head_weight(N, K);
  const at::Tensor x = hidden(1, K);
  // Row 100 made the clear maximum, copied to rows 900 and 4000 (identical rows give identical
  // outputs: same kernel, same order of sums); rows 20, 30, 40 likewise tie for the 4th place.
  make_clear_maximum(w, x, 100);
  for (const int64_t n : {900, 4000}) w[n].copy_(w[100]);
  w[10].copy_(w[100] * 0.75);
  for (const int64_t n : {20, 30, 40}) w[n].copy_(w[100] * 0.5);
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    const Linear layer(w.to(dt), std::nullopt, LinearPath::Avx2Packed);
    const LinearScreen screen(layer);
    const at::Tensor xd = x.to(dt);
    const at::Tensor full = layer(xd);
    const at::Tensor top1 = screen.top_k(xd, 1).to(at::kFloat);
    for (const int64_t n : {100, 900, 4000}) EXPECT_EQ(top1[0][n].item<float>(), full[0][n].item<float>()) << dt;
    EXPECT_EQ(argmax_top1(top1, false).first.item<int64_t>(), 100);
    // k = 5: rows 100, 900, 4000, 10 and the 5th place tied three ways.
    expect_top_k_exact(screen.top_k(xd, 5), full, 5);
    const at::Tensor top5 = screen.top_k(xd, 5).to(at::kFloat);
    for (const int64_t n : {20, 30, 40}) EXPECT_EQ(top5[0][n].item<float>(), full[0][n].to(at::kFloat).item<float>());
  }
}

TEST(LinearScreen, NearTiesAreDecidedAsTheFullProductDecidesThem) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(5);
  const int64_t N = 4096, K = 576;
  at::Tensor w = head_weight(N, K);
  const at::Tensor x = hidden(3, K);
  // Row 100 made the clear maximum for row 0 of x; 60 rows in 60 other panels are copies of it with one
  // weight moved by an ulp or two, so that their exact logits tie with it or sit an ulp or so away on
  // either side, far inside the int8 bound: only the kernel's own rounding decides the order.
  make_clear_maximum(w, x, 100);
  for (int64_t i = 0; i < 60; ++i) {
    const int64_t n = 37 + 64 * i + (i % 16);
    w[n].copy_(w[100]);
    const float v = w[n][i % K].item<float>();
    w[n][i % K] = i % 3 == 0 ? v : std::nextafter(v, i % 3 == 1 ? INFINITY : -INFINITY);
  }
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    const Linear layer(w.to(dt), std::nullopt, LinearPath::Avx2Packed);
    const LinearScreen screen(layer);
    const at::Tensor xd = x.to(dt), full = layer(xd);
    for (const int64_t k : {int64_t{1}, int64_t{5}, int64_t{50}}) {
      const at::Tensor got = screen.top_k(xd, k);
      EXPECT_GT(expect_top_k_exact(got, full, k), full.numel() / 2) << "the screen should still leave most out";
      EXPECT_TRUE(at::equal(argmax_top1(got, false).first, argmax_top1(full, false).first)) << dt << " k " << k;
      const SamplingParams sp{0.7, k, 0.9, 0.0};
      EXPECT_TRUE(at::equal(warped_probabilities(got, sp), warped_probabilities(full, sp))) << dt << " k " << k;
    }
  }
}

TEST(LinearScreen, Bf16KeepsTheRoundedTopK) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(3);
  const Linear layer(head_weight(4096, 576).to(at::kBFloat16), std::nullopt, LinearPath::Avx2Packed);
  const LinearScreen screen(layer);
  for (const int64_t M : {1, 9}) {
    const at::Tensor x = hidden(M, 576).to(at::kBFloat16);
    const at::Tensor full = layer(x);
    for (const int64_t k : {1, 50}) {
      const at::Tensor got = screen.top_k(x, k);
      EXPECT_EQ(got.scalar_type(), at::kBFloat16);
      expect_top_k_exact(got, full, k);  // ties among the bf16 values included
      EXPECT_TRUE(at::equal(argmax_top1(got, false).first, argmax_top1(full, false).first));
      const SamplingParams sp{1.0, k, 1.0, 0.0};
      EXPECT_TRUE(at::equal(warped_probabilities(got, sp), warped_probabilities(full, sp)));
    }
  }
}

TEST(LinearScreen, FullProductWhereTheBoundDoesNotApply) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(4);
  const int64_t N = 1024, K = 64;
  const Linear layer(head_weight(N, K), std::nullopt, LinearPath::Avx2Packed);
  const LinearScreen screen(layer);
  const at::Tensor x = hidden(2, K);
  auto same = [](const at::Tensor& a, const at::Tensor& b) {
    return at::equal(at::isnan(a), at::isnan(b)) && at::equal(a.nan_to_num(0, 0, 0), b.nan_to_num(0, 0, 0));
  };
  EXPECT_TRUE(at::equal(screen.top_k(x, 0), layer(x)));                   // every logit asked for
  EXPECT_TRUE(at::equal(screen.top_k(x, kScreenMaxTopK + 1), layer(x)));  // too many to pay
  EXPECT_TRUE(at::equal(screen.top_k(x, N), layer(x)));
  const at::Tensor prefill = hidden(kAvx2MaxM + 1, K);
  EXPECT_TRUE(at::equal(screen.top_k(prefill, 1), layer(prefill)));        // the MKL path of the layer
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), 1e-35f}) {
    at::Tensor xb = x.clone();
    if (bad == 1e-35f) xb[1].fill_(bad);  // a row the int8 kernel would zero: no bound
    else xb[1][5] = bad;
    EXPECT_TRUE(same(screen.top_k(xb, 1), layer(xb))) << bad;
    EXPECT_FALSE(screen.bounds(xb).first.defined()) << bad;
  }
  at::Tensor zero = x.clone();
  zero[0].zero_();  // an all-zero row is exact (every output is the bias) and still screened
  expect_top_k_exact(screen.top_k(zero, 1), layer(zero), 1);
  // A non-finite weight row: the full product (and its non-finite outputs) for every input.
  at::Tensor w = head_weight(N, K);
  w[7].fill_(std::numeric_limits<float>::infinity());
  const Linear broken(w, std::nullopt, LinearPath::Avx2Packed);
  EXPECT_TRUE(same(LinearScreen(broken).top_k(x, 1), broken(x)));
}

TEST(LinearScreen, PathsSharingAndBytes) {
  SKIP_WITHOUT_AVX2();
  const at::Tensor w = head_weight(100, 40);
  const Linear layer(w, std::nullopt, LinearPath::Avx2Packed);
  EXPECT_TRUE(LinearScreen::supports(layer));
  EXPECT_TRUE(LinearScreen::supports(Linear(w.to(at::kBFloat16), std::nullopt, LinearPath::Avx2Packed)));
  for (const LinearPath p : {LinearPath::Aten, LinearPath::Int8Avx2}) {
    EXPECT_FALSE(LinearScreen::supports(Linear(w, std::nullopt, p)));
    EXPECT_THROW(LinearScreen(Linear(w, std::nullopt, p)), ValueError);
  }
  EXPECT_FALSE(LinearScreen::supports(Linear(w.to(at::kDouble), std::nullopt, LinearPath::Aten)));
  // Sharing an int8 copy (an int8 draft's layer): the same tensors, the same results.
  const Linear int8 = layer.with_path(LinearPath::Int8Avx2);
  const LinearScreen shared(layer, int8);
  EXPECT_TRUE(shared.int8().weight().is_same(w));
  const at::Tensor x = hidden(3, 40);
  EXPECT_TRUE(at::equal(shared.top_k(x, 2), LinearScreen(layer).top_k(x, 2)));
  EXPECT_THROW(LinearScreen(layer, Linear(w.clone(), std::nullopt, LinearPath::Int8Avx2)), ValueError);
  EXPECT_THROW(LinearScreen(layer, layer), ValueError);
  // int8 panels (112 rows x 40 + per-row scale) + four floats per output.
  EXPECT_EQ(shared.extra_bytes(), int8.extra_bytes() + 100 * 16);
}

}  // namespace
}  // namespace dotf
