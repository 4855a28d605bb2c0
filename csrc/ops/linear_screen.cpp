#include "ops/linear_screen.h"

#include "core/check.h"
#include "ops/cpu/features.h"
#include "ops/cpu/linear_avx2.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/nextafter.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>

namespace dotf {

// Why the kept outputs are exact. For a row x and output j let f_j be the value the layer's kernel
// computes (before any rounding to x's dtype) and [lo_j, hi_j] = [l8_j - b_j, l8_j + b_j] the int8
// screen's interval, which holds f_j (the bound, below). Let v be the k-th largest f_j and t the k-th
// largest lo_j. As lo_i <= f_i for every i, t <= v. Every j with f_j >= v (the k largest and all
// outputs tied with the k-th) then has hi_j >= f_j >= v >= t, so keeping every j with hi_j >= t keeps
// all of them, and their panels are computed by the layer's own kernel: the same values bitwise (each
// panel's sums run in the same order whatever else is computed, ops/cpu/linear_avx2.cpp). A consumer
// that reads only the k largest sees what it would see in the full product: the argmax (the first
// index of the maximum: every output equal to it is kept), the k-th largest value and every output
// >= it (top-k), and all that is computed from those alone (softmax over them, top-p, min-p). A bf16
// layer hands out r(f) with r the rounding to bf16; r is monotone, so keeping j when r(hi_j) >= r(t)
// keeps every j with r(f_j) >= r(v), the k-th largest rounded value.
//
// The bound, for one output (weight row w, its int8 copy s q with |q_k| <= 127, bias b) and one row x
// of K values (amax = max |x_k|, ||x||_1), u = 2^-24, gamma(n) = n u / (1 - n u):
//   E  = b + sum_k w_k x_k, the exact value.
//   f  = the fp32 kernel: one chain of fused multiply-adds from b over Kp >= K packed steps (the
//        padding adds exact zeros), so |f - E| <= gamma(Kp) (|b| + sum |w_k x_k|)  [Higham, Thm 3.1].
//   l8 = the int8 kernel (ops/cpu/linear_avx2_int8.cpp): x rounded per row to int16,
//        xq_k = rint(fl(x_k fl(1 / sx))) with sx = fl(amax / 32767); exact integer sums S = sum q_k xq_k
//        flushed to fp32 in chunks, scaled by sx and s, the bias added; r8 = int8_fp32_roundings
//        roundings in all, so |l8 - (b + s sx S)| <= gamma(r8) (|b| + s sx sum |q_k xq_k|).
//   (1) Weight rounding: |w_k - s q_k| <= e, measured when the screen is built (the row's maximum,
//       rounded up; about s / 2).
//   (2) Activation rounding: x_k fl(1 / sx) = (x_k / sx)(1 + d1)(1 + d2), |d| <= u, and |x_k / sx| <=
//       32767 / (1 - u), so |xq_k - x_k / sx| <= 1/2 + 32768 (2u + u^2) < 1/2 + 2^-7 = rho (the product
//       stays below 32767.5, so the clamp to +-32767 never binds).
//   b + s sx S - E = sum_k s q_k (sx xq_k - x_k) - sum_k (w_k - s q_k) x_k, hence
//       |b + s sx S - E| <= R = e ||x||_1 + s sx rho a,   a = sum_k |q_k|.
//   The magnitudes the roundings scale: with A = s min(127 ||x||_1, a amax) >= s sum |q_k x_k|,
//       sum |w_k x_k| <= A + e ||x||_1 <= A + R and s sx sum |q_k xq_k| <= A + s sx rho a <= A + R, so
//       |l8 - f| <= R + g (|b| + A + R),   g = gamma(Kp) + gamma(r8).
// Computed in float64 as bound = (1 + 2^-10) (R + 2 g (|b| + A + R)) + 2^-100, with sx replaced by
// amax / 32767 (1 + 2^-20) >= sx. The factor 2 and the 2^-10 cover the float64 roundings of ||x||_1, of
// the bound and of l8 +- bound (relative 2^-52 at most, against a bound >= 2^-21 (|b| + A + R) >=
// 2^-23 |l8|); 2^-100 covers underflow (2^-149 at most per rounding).
//
// Where the bound does not hold, top_k computes the whole product instead: a row with amax in
// (0, 2^-100) (the int8 kernel zeroes a row whose scale is subnormal: an error of ||x||_1, not of
// rho sx), or an output whose |l8| + bound is not finite or reaches 2^100 (inf or NaN in x or in the
// weights, or values that could overflow a kernel's sums). So wherever -inf stands for "not among the
// k largest" the full product is finite.
namespace {

constexpr double kRho = 0.5 + 1.0 / 128;
constexpr double kSlack = 1.0 + 1.0 / 1024;
const double kTiny = std::ldexp(1.0, -100);
const double kHuge = std::ldexp(1.0, 100);

double gamma(int64_t n) {
  const double nu = static_cast<double>(n) * std::ldexp(1.0, -24);
  return nu / (1.0 - nu);
}

// Rows of the weight quantized per chunk, so that the float64 copies stay small.
constexpr int64_t kTermRows = 2048;

}  // namespace

bool LinearScreen::supports(const Linear& layer) {
  // sum |q| <= 127 K must be exact in a float: K <= 2^17.
  return layer.path() == LinearPath::Avx2Packed && cpu_has_avx2_fma() && layer.in_features() <= (1 << 17);
}

LinearScreen::LinearScreen(const Linear& layer, std::optional<Linear> int8) : layer_(layer) {
  DOTF_CHECK_ARG(supports(layer), "a linear screen needs a layer on path 'avx2' (fp32 or bf16 weights, an AVX2 "
                 "CPU, at most 131072 inputs), got path '", to_string(layer.path()), "' with ", layer.in_features(),
                 " inputs");
  if (int8) {
    DOTF_CHECK_ARG(int8->path() == LinearPath::Int8Avx2 && int8->weight().is_same(layer.weight()),
                   "the int8 copy given to a linear screen must be an 'int8_avx2' copy of the layer's weight, got "
                   "path '", to_string(int8->path()), "'");
    int8_ = *std::move(int8);
  } else {
    int8_ = layer.with_path(LinearPath::Int8Avx2);
  }
  const int64_t N = layer.out_features(), K = layer.in_features();
  const at::Tensor q = avx2::int8_panel_values(int8_.int8_, N, K);       // [N, K] int8
  const at::Tensor s = int8_.int8_.scale.narrow(0, 0, N);               // [N] float32
  terms_ = at::zeros({N, 4}, s.options());
  for (int64_t r0 = 0; r0 < N; r0 += kTermRows) {
    const int64_t n = std::min(kTermRows, N - r0);
    const at::Tensor qd = q.narrow(0, r0, n).to(at::kDouble);
    const at::Tensor sd = s.narrow(0, r0, n).to(at::kDouble);
    // max_k |w - s q| in float64 (exact: w and s q are products of floats and small integers), NaN
    // for a non-finite row; then rounded up to a float.
    const at::Tensor err =
        std::get<0>((layer.weight().narrow(0, r0, n).to(at::kDouble) - qd * sd.unsqueeze(1)).abs().max(1));
    const at::Tensor err_f = err.to(at::kFloat);
    terms_.select(1, 0).narrow(0, r0, n).copy_(
        at::where(err_f.to(at::kDouble) < err, at::nextafter(err_f, at::full_like(err_f, INFINITY)), err_f));
    terms_.select(1, 2).narrow(0, r0, n).copy_(qd.abs().sum(1));  // an integer <= 127 K: exact
  }
  terms_.select(1, 1).copy_(s);
  if (layer_.packed_bias_) terms_.select(1, 3).copy_(at::abs(*layer_.packed_bias_));
  fp32_gamma_ = gamma(layer_.packed_.size(1)) + gamma(avx2::int8_fp32_roundings(int8_.int8_));
}

int64_t LinearScreen::extra_bytes() const { return int8_.extra_bytes() + terms_.nbytes(); }

std::optional<std::vector<LinearScreen::RowNorms>> LinearScreen::row_norms(const at::Tensor& xf) const {
  const int64_t M = xf.size(0), K = xf.size(1);
  std::vector<RowNorms> out(M);
  const float* x = xf.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    double l1 = 0, amax = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double a = std::fabs(static_cast<double>(x[m * K + k]));
      l1 += a;
      amax = std::max(amax, a);
    }
    if (!std::isfinite(l1) || (amax > 0 && amax < kTiny)) return std::nullopt;  // NaN fails isfinite too
    out[m] = {l1, amax};
  }
  return out;
}

bool LinearScreen::fill_bounds(const RowNorms& r, const float* l8, double* bound) const {
  const int64_t N = layer_.out_features();
  const float* t = terms_.data_ptr<float>();  // per output: e, s, a, |b|
  const double g2 = 2 * fp32_gamma_;
  const double sx_rho = r.amax / 32767.0 * (1.0 + std::ldexp(1.0, -20)) * kRho;
  const double l1_127 = 127.0 * r.l1;
  for (int64_t n = 0; n < N; ++n) {
    const double e = t[4 * n], s = t[4 * n + 1], a = t[4 * n + 2], b = t[4 * n + 3];
    const double R = e * r.l1 + s * sx_rho * a;
    const double A = s * std::min(l1_127, a * r.amax);
    const double bn = kSlack * (R + g2 * (b + A + R)) + kTiny;
    if (!(std::fabs(static_cast<double>(l8[n])) + bn < kHuge)) return false;  // also NaN
    bound[n] = bn;
  }
  return true;
}

std::pair<at::Tensor, at::Tensor> LinearScreen::bounds(const at::Tensor& x) const {
  DOTF_CHECK_DIM(x, 2, "linear screen input");
  DOTF_CHECK_SIZE(x, 1, layer_.in_features(), "linear screen input");
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const auto norms = row_norms(xf);
  if (!norms) return {};
  const int64_t M = xf.size(0), N = layer_.out_features();
  at::Tensor l8 = avx2::linear_int8(xf, int8_.int8_, int8_.packed_bias_, N);
  at::Tensor bound = at::empty({M, N}, xf.options().dtype(at::kDouble));
  for (int64_t m = 0; m < M; ++m) {
    if (!fill_bounds((*norms)[m], l8.data_ptr<float>() + m * N, bound.data_ptr<double>() + m * N)) return {};
  }
  return {l8, bound};
}

at::Tensor LinearScreen::top_k(const at::Tensor& x, int64_t k) const {
  const int64_t N = layer_.out_features();
  // The layer's own product (and its argument errors) wherever the screen does not run.
  if (k <= 0 || k > kScreenMaxTopK || k >= N || x.dim() != 2 || x.size(0) == 0 || x.size(0) > kAvx2MaxM ||
      !x.device().is_cpu() || x.scalar_type() != layer_.weight().scalar_type() || x.size(1) != layer_.in_features())
    return layer_(x);
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const auto norms = row_norms(xf);
  if (!norms) return layer_(x);
  const int64_t M = xf.size(0), P = (N + avx2::kPanel - 1) / avx2::kPanel;
  const at::Tensor l8 = avx2::linear_int8(xf, int8_.int8_, int8_.packed_bias_, N);
  // r(): what a kept value's comparison sees after the layer's rounding to x's dtype (see the top).
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  auto r = [bf16](double v) {
    return bf16 ? static_cast<double>(static_cast<float>(c10::BFloat16(static_cast<float>(v)))) : v;
  };
  std::vector<char> keep(P, 0);
  std::vector<double> bound(N);
  for (int64_t m = 0; m < M; ++m) {
    const float* l = l8.data_ptr<float>() + m * N;
    if (!fill_bounds((*norms)[m], l, bound.data())) return layer_(x);
    // t: the k-th largest lower end (a min-heap of the k largest so far).
    std::priority_queue<double, std::vector<double>, std::greater<double>> heap;
    for (int64_t n = 0; n < N; ++n) {
      const double lo = l[n] - bound[n];
      if (static_cast<int64_t>(heap.size()) < k) heap.push(lo);
      else if (lo > heap.top()) {
        heap.pop();
        heap.push(lo);
      }
    }
    const double t = r(heap.top());
    for (int64_t n = 0; n < N; ++n)
      if (r(l[n] + bound[n]) >= t) keep[n / avx2::kPanel] = 1;
  }
  std::vector<int64_t> panels;
  for (int64_t p = 0; p < P; ++p)
    if (keep[p]) panels.push_back(p);
  if (2 * static_cast<int64_t>(panels.size()) > P) return layer_(x);  // the int8 pass did not pay this time
  at::Tensor y = at::full({M, N}, -std::numeric_limits<float>::infinity(), xf.options());
  avx2::linear_panels(xf, layer_.packed_, layer_.packed_bias_, N, panels, y);
  return bf16 ? y.to(at::kBFloat16) : y;
}

}  // namespace dotf
