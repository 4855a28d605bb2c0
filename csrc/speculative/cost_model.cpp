#include "speculative/cost_model.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>

namespace dotf {

double DraftCosts::total() const {
  double t = rest;
  for (const auto* v : {&attention, &mlp})
    for (double c : *v)
      if (!std::isnan(c)) t += c;
  return t;
}

double acceptance_factor(const LayerPlan& plan, const std::vector<double>& attn_s, const std::vector<double>& mlp_s,
                         double sensitivity) {
  double loss = 0;
  for (size_t l = 0; l < plan.attention.size(); ++l) {
    if (!plan.attention[l]) loss += 1.0 - attn_s[l];
    if (!plan.mlp[l]) loss += 1.0 - mlp_s[l];
  }
  return std::exp(-sensitivity * loss);
}

double expected_round_tokens(double a, int64_t k) {
  return a >= 1.0 ? static_cast<double>(k + 1) : (1.0 - std::pow(a, k + 1)) / (1.0 - a);
}

double predicted_rate(double a, double draft_seconds, double verify_seconds, int64_t max_draft) {
  double best = 0;
  for (int64_t k = 1; k <= max_draft; ++k) {
    best = std::max(best, expected_round_tokens(a, k) / (static_cast<double>(k) * draft_seconds + verify_seconds));
  }
  return best;
}

CostAwareChoice select_cost_aware(const CostModelInputs& in) {
  const auto L = static_cast<int64_t>(in.attention_similarity.size());
  DOTF_CHECK_ARG(in.sensitivity >= 0, "sensitivity must be >= 0, got ", in.sensitivity);
  DOTF_CHECK(static_cast<int64_t>(in.mlp_similarity.size()) == L &&
                 static_cast<int64_t>(in.costs.attention.size()) == L && static_cast<int64_t>(in.costs.mlp.size()) == L,
             "cost model: similarity and cost vectors must all have num_layers entries");
  struct Candidate { int64_t layer; bool attention; double saved, loss; };
  std::vector<Candidate> candidates;
  for (int64_t l = in.keep_first; l < L; ++l) {
    for (bool attention : {true, false}) {
      const double s = attention ? in.attention_similarity[l] : in.mlp_similarity[l];
      const double cost = attention ? in.costs.attention[l] : in.costs.mlp[l];
      if (std::isnan(s) || std::isnan(cost) || cost <= 0) continue;
      candidates.push_back({l, attention, cost, std::max(0.0, 1.0 - s)});
    }
  }
  // Most seconds saved per unit of acceptance lost first; ties to the earlier sublayer (deterministic).
  std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& x, const Candidate& y) {
    return x.saved * y.loss > y.saved * x.loss;
  });

  const double a0 = std::clamp(in.base_acceptance, 0.0, 1.0);
  double draft = in.costs.total(), loss = 0;
  CostAwareChoice choice{LayerPlan::full(L), a0, 0, 0};
  choice.predicted_tokens_per_second = choice.full_plan_tokens_per_second =
      predicted_rate(a0, draft, in.verify_seconds, in.max_draft);
  LayerPlan plan = LayerPlan::full(L);
  for (const Candidate& c : candidates) {
    (c.attention ? plan.attention : plan.mlp)[c.layer] = false;
    draft -= c.saved;
    loss += c.loss;
    const double a = a0 * std::exp(-in.sensitivity * loss);
    const double rate = predicted_rate(a, std::max(draft, 0.0), in.verify_seconds, in.max_draft);
    if (rate > choice.predicted_tokens_per_second) choice = {plan, a, rate, choice.full_plan_tokens_per_second};
  }
  return choice;
}

}  // namespace dotf
