#include "ops/sample.h"

#include "core/check.h"
#include "ops/cpu/features.h"
#include "ops/cpu/sample_avx2.h"
#include "ops/cuda/entries.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>
#include <type_traits>
#include <vector>

namespace dotf {

namespace {

// Scalar passes of a row (double rows, and float rows on CPUs without AVX2); ops/cpu/sample_avx2.h has
// the float ones vectorized. See there for what each computes.
namespace scalar {

template <typename T>
bool row_max(const T* x, int64_t n, T* top, int64_t* finite) {
  *top = -std::numeric_limits<T>::infinity();
  *finite = 0;
  for (int64_t v = 0; v < n; ++v) {
    if (std::isnan(x[v]) || x[v] == std::numeric_limits<T>::infinity()) return false;
    *finite += x[v] > -std::numeric_limits<T>::infinity();
    *top = std::max(*top, x[v]);
  }
  return true;
}

template <typename T>
T kth_largest(const T* x, int64_t n, int64_t k) {
  std::priority_queue<T, std::vector<T>, std::greater<T>> heap;  // the k largest so far
  for (int64_t v = 0; v < n; ++v) {
    if (static_cast<int64_t>(heap.size()) < k) heap.push(x[v]);
    else if (x[v] > heap.top()) {
      heap.pop();
      heap.push(x[v]);
    }
  }
  return heap.top();
}

template <typename T>
double exp_shifted(const T* x, int64_t n, T top, T inv_t, T floor, T* out) {
  double total = 0;
  for (int64_t v = 0; v < n; ++v) {
    out[v] = x[v] >= floor ? std::exp((x[v] - top) * inv_t) : T(0);
    total += out[v];
  }
  return total;
}

template <typename T>
double zero_below(T* w, int64_t n, T threshold) {
  double total = 0;
  for (int64_t v = 0; v < n; ++v) {
    if (w[v] < threshold) w[v] = 0;
    total += w[v];
  }
  return total;
}

template <typename T>
void scale(T* w, int64_t n, T factor) {
  for (int64_t v = 0; v < n; ++v) w[v] *= factor;
}

}  // namespace scalar

// The scalar passes, or the AVX2 ones for float rows on a CPU that runs them.
template <typename T>
struct RowPasses {
  static bool row_max(const T* x, int64_t n, T* top, int64_t* finite) {
    if constexpr (std::is_same_v<T, float>)
      if (cpu_has_avx2_fma()) return avx2::row_max(x, n, top, finite);
    return scalar::row_max(x, n, top, finite);
  }
  static T kth_largest(const T* x, int64_t n, int64_t k) {
    if constexpr (std::is_same_v<T, float>)
      if (cpu_has_avx2_fma()) return avx2::kth_largest(x, n, k);
    return scalar::kth_largest(x, n, k);
  }
  static double exp_shifted(const T* x, int64_t n, T top, T inv_t, T floor, T* out) {
    if constexpr (std::is_same_v<T, float>)
      if (cpu_has_avx2_fma()) return avx2::exp_shifted(x, n, top, inv_t, floor, out);
    return scalar::exp_shifted(x, n, top, inv_t, floor, out);
  }
  static double zero_below(T* w, int64_t n, T threshold) {
    if constexpr (std::is_same_v<T, float>)
      if (cpu_has_avx2_fma()) return avx2::zero_below(w, n, threshold);
    return scalar::zero_below(w, n, threshold);
  }
  static void scale(T* w, int64_t n, T factor) {
    if constexpr (std::is_same_v<T, float>)
      if (cpu_has_avx2_fma()) return avx2::scale(w, n, factor);
    scalar::scale(w, n, factor);
  }
};

// Top-p over the unnormalized weights e[0, V) (sum z): keeps the most likely tokens while the mass of
// those more likely than a token is below top_p * z (transformers: drop the tokens whose ascending
// cumulative probability is <= 1 - top_p; the most likely always stays). Ties rank by index. Only the
// candidates above a floor are sorted; the floor drops until their mass reaches the target, which
// makes the result exact. Returns the kept mass.
template <typename T>
double top_p_filter(T* e, int64_t V, double z, double top_p, std::vector<std::pair<T, int64_t>>& cand) {
  const double target = top_p * z;
  for (const double floor : {1e-3, 1e-6, 0.0}) {
    cand.clear();
    double mass = 0;
    for (int64_t v = 0; v < V; ++v)
      if (e[v] > 0 && e[v] >= floor) {
        cand.emplace_back(e[v], v);
        mass += e[v];
      }
    if (mass < target && floor > 0) continue;
    std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    double kept = 0;
    size_t last = 0;
    for (size_t i = 0; i < cand.size() && kept < target; ++i) {
      last = i;
      kept += cand[i].first;
    }
    const auto [e_cut, v_cut] = cand[last];
    for (int64_t v = 0; v < V; ++v)
      if (e[v] < e_cut || (e[v] == e_cut && v > v_cut)) e[v] = 0;
    return kept;
  }
  return z;  // unreachable: the floor 0 takes every token
}

// One row (T: float or double): logits -> warped probabilities in out. Returns false for a row with a
// NaN or +inf, or with no finite logit. Every warper is invariant to shifting the logits, so they are
// shifted by their maximum before the temperature scales them: no overflow at small temperatures, and
// exp(0) = 1 is the most likely token's weight. Top-k is taken on the raw logits (the scaling keeps
// their order).
template <typename T>
bool warp_row(const T* logits, int64_t V, const SamplingParams& sp, T* out, std::vector<std::pair<T, int64_t>>& cand) {
  using P = RowPasses<T>;
  T top;
  int64_t finite;
  if (!P::row_max(logits, V, &top, &finite) || finite == 0) return false;
  const T floor = sp.top_k > 0 && sp.top_k < finite ? P::kth_largest(logits, V, sp.top_k)
                                                      : -std::numeric_limits<T>::infinity();
  double z = P::exp_shifted(logits, V, top, static_cast<T>(1.0 / sp.temperature), floor, out);
  if (sp.top_p < 1.0) z = top_p_filter(out, V, z, sp.top_p, cand);
  if (sp.min_p > 0.0) z = P::zero_below(out, V, static_cast<T>(sp.min_p));  // relative to the top weight, 1
  P::scale(out, V, static_cast<T>(1.0 / z));
  return true;
}

// The first index whose cumulative weight exceeds u * total (total: the sum of weight(0..V)); the last
// positive-weight index when rounding leaves none.
template <typename Weight>
int64_t draw(int64_t V, double u, Weight weight) {
  double total = 0;
  for (int64_t v = 0; v < V; ++v) total += weight(v);
  const double target = u * total;
  double cum = 0;
  int64_t last = -1;
  for (int64_t v = 0; v < V; ++v) {
    const double w = weight(v);
    if (w <= 0) continue;
    cum += w;
    last = v;
    if (cum > target) return v;
  }
  return last;
}

// draw() over a row of probabilities, vectorized for float rows.
template <typename T>
int64_t draw_row(const T* p, int64_t V, double u) {
  if constexpr (std::is_same_v<T, float>)
    if (cpu_has_avx2_fma()) return avx2::draw(p, V, u);
  return draw(V, u, [&](int64_t v) { return static_cast<double>(p[v]); });
}

// min(1, p / q): the probability that a draft drawn from q with probability q is kept.
double acceptance_probability(double p, double q) { return q <= p ? 1.0 : p / q; }

// The residual max(0, p - q), unnormalized; q = 1 at the lookup draft x and 0 elsewhere when q is null.
template <typename T>
double residual(const T* p, const T* q, int64_t x, int64_t y) {
  const double qy = q ? static_cast<double>(q[y]) : (y == x ? 1.0 : 0.0);
  return std::max(0.0, static_cast<double>(p[y]) - qy);
}

void check_sampling_params(const SamplingParams& sp) {
  DOTF_CHECK_ARG(sp.temperature > 0 && std::isfinite(sp.temperature), "temperature must be a finite number > 0, got ",
                 sp.temperature);
  DOTF_CHECK_ARG(sp.top_k >= 0, "top_k must be >= 0, got ", sp.top_k);
  DOTF_CHECK_ARG(sp.top_p > 0 && sp.top_p <= 1, "top_p must be in (0, 1], got ", sp.top_p);
  DOTF_CHECK_ARG(sp.min_p >= 0 && sp.min_p < 1, "min_p must be in [0, 1), got ", sp.min_p);
}

void check_uniforms(const at::Tensor& u, int64_t n, const char* name) {
  DOTF_CHECK_DIM(u, 1, name);
  DOTF_CHECK_DTYPE(u, at::kDouble, name);
  DOTF_CHECK_SIZE(u, 0, n, name);
}

}  // namespace

at::Tensor warped_probabilities(const at::Tensor& logits, const SamplingParams& params) {
  DOTF_CHECK_DIM(logits, 2, "logits");
  DOTF_CHECK_ARG(logits.size(1) > 0, "logits must have a non-empty vocabulary");
  check_sampling_params(params);
  if (logits.is_cuda()) return warped_probabilities_cuda(logits.contiguous(), params);
  DOTF_CHECK_ARG(logits.device().is_cpu(), "warped_probabilities runs on the CPU, got logits on ", logits.device());
  // float64 rows stay float64 (the exactness tests); every other dtype is warped in float32.
  const at::ScalarType dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor x = logits.to(dtype).contiguous();
  const int64_t rows = x.size(0), V = x.size(1);
  at::Tensor out = at::empty({rows, V}, x.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "warped_probabilities", [&] {
    std::vector<std::pair<scalar_t, int64_t>> cand;
    for (int64_t r = 0; r < rows; ++r)
      DOTF_CHECK(warp_row(x.data_ptr<scalar_t>() + r * V, V, params, out.data_ptr<scalar_t>() + r * V, cand),
                 "the model produced non-finite logits (NaN or inf, or no finite logit) at row ", r,
                 "; the weights or the dtype cannot represent this computation");
  });
  return out;
}

at::Tensor sample_rows(const at::Tensor& probs, const at::Tensor& uniforms) {
  DOTF_CHECK_DIM(probs, 2, "probs");
  check_uniforms(uniforms, probs.size(0), "uniforms");
  if (probs.is_cuda()) return sample_rows_cuda(probs.contiguous(), uniforms.contiguous());
  DOTF_CHECK_ARG(probs.device().is_cpu() && uniforms.device().is_cpu(), "sample_rows runs on the CPU");
  const at::Tensor p = probs.contiguous(), u = uniforms.contiguous();
  const int64_t rows = p.size(0), V = p.size(1);
  at::Tensor ids = at::empty({rows}, p.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "sample_rows", [&] {
    for (int64_t r = 0; r < rows; ++r)
      ids.data_ptr<int64_t>()[r] = draw_row(p.data_ptr<scalar_t>() + r * V, V, u.data_ptr<double>()[r]);
  });
  return ids;
}

std::pair<at::Tensor, at::Tensor> speculative_accept(const at::Tensor& p_in, const at::Tensor& q_in,
                                                     const at::Tensor& drafts_in, const at::Tensor& lookup_in,
                                                     const at::Tensor& uniforms_in) {
  DOTF_CHECK_DIM(p_in, 2, "p");
  DOTF_CHECK_DIM(q_in, 2, "q");
  DOTF_CHECK_DIM(drafts_in, 1, "drafts");
  DOTF_CHECK_DTYPE(drafts_in, at::kLong, "drafts");
  DOTF_CHECK_DTYPE(lookup_in, at::kBool, "lookup");
  const int64_t k = drafts_in.size(0), V = p_in.size(1);
  DOTF_CHECK_SIZE(p_in, 0, k + 1, "p");
  DOTF_CHECK_SIZE(q_in, 0, k, "q");
  DOTF_CHECK_ARG(k == 0 || q_in.size(1) == V, "q must have p's vocabulary ", V, ", got ", q_in.sizes());
  DOTF_CHECK_SIZE(lookup_in, 0, k, "lookup");
  DOTF_CHECK_ARG(p_in.scalar_type() == q_in.scalar_type(), "p and q must share a dtype, got ", p_in.scalar_type(),
                 " and ", q_in.scalar_type());
  check_uniforms(uniforms_in, k + 1, "uniforms");
  if (p_in.is_cuda())
    return speculative_accept_cuda(p_in.contiguous(), q_in.contiguous(), drafts_in.contiguous(),
                                   lookup_in.contiguous(), uniforms_in.contiguous());
  DOTF_CHECK_ARG(p_in.device().is_cpu(), "speculative_accept runs on the CPU, got p on ", p_in.device());
  const at::Tensor p = p_in.contiguous(), q = q_in.contiguous(), drafts = drafts_in.contiguous();
  const at::Tensor lookup = lookup_in.contiguous(), u = uniforms_in.contiguous();
  // Every draft is checked, not only those the test reaches: whether a bad id is caught must not
  // depend on the uniforms.
  for (int64_t i = 0; i < k; ++i) {
    const int64_t x = drafts.data_ptr<int64_t>()[i];
    DOTF_CHECK_ARG(x >= 0 && x < V, "drafts[", i, "] = ", x, " is outside the vocabulary [0, ", V, ")");
  }
  at::Tensor out = at::empty({2}, drafts.options());
  at::Tensor ratios = at::full({k}, std::numeric_limits<double>::quiet_NaN(), u.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "speculative_accept", [&] {
    const scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* Q = k > 0 ? q.data_ptr<scalar_t>() : nullptr;
    const int64_t* d = drafts.data_ptr<int64_t>();
    const bool* is_lookup = lookup.data_ptr<bool>();
    const double* uu = u.data_ptr<double>();
    int64_t i = 0;
    for (; i < k; ++i) {
      const int64_t x = d[i];
      const double px = P[i * V + x], qx = is_lookup[i] ? 1.0 : static_cast<double>(Q[i * V + x]);
      ratios.data_ptr<double>()[i] = acceptance_probability(px, qx);
      if (!(uu[i] * qx < px)) break;  // rejected: u_i >= p(x) / q(x)
    }
    int64_t next;
    const scalar_t* prow = P + i * V;
    if (i == k) {
      next = draw_row(prow, V, uu[k]);
    } else {
      const scalar_t* qrow = is_lookup[i] ? nullptr : Q + i * V;
      next = draw(V, uu[k], [&](int64_t y) { return residual(prow, qrow, d[i], y); });
      // p == q up to rounding leaves no residual mass: the target row itself is the distribution left.
      if (next < 0) next = draw_row(prow, V, uu[k]);
    }
    out.data_ptr<int64_t>()[0] = i;
    out.data_ptr<int64_t>()[1] = next;
  });
  return {out, ratios};
}

at::Tensor accept_output_distribution(const at::Tensor& p_in, const at::Tensor& q_in, int64_t x) {
  DOTF_CHECK_DIM(p_in, 1, "p");
  DOTF_CHECK_DTYPE(p_in, at::kDouble, "p");
  const int64_t V = p_in.size(0);
  DOTF_CHECK_ARG(x >= 0 && x < V, "x = ", x, " is outside the vocabulary [0, ", V, ")");
  const at::Tensor p = p_in.contiguous();
  const at::Tensor q = q_in.defined() ? q_in.to(at::kDouble).contiguous() : at::Tensor();
  const double* P = p.data_ptr<double>();
  const double* Q = q.defined() ? q.data_ptr<double>() : nullptr;
  const double keep = acceptance_probability(P[x], Q ? Q[x] : 1.0);
  double mass = 0;
  for (int64_t y = 0; y < V; ++y) mass += residual(P, Q, x, y);
  at::Tensor out = at::zeros({V}, p.options());
  double* o = out.data_ptr<double>();
  for (int64_t y = 0; y < V; ++y) o[y] = (1.0 - keep) * (mass > 0 ? residual(P, Q, x, y) / mass : P[y]);
  o[x] += keep;
  return out;
}

}  // namespace dotf
