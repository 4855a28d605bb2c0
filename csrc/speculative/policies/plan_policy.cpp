#include "speculative/policies/plan_policy.h"

#include "speculative/cost_model.h"
#include "speculative/selection.h"

#include <ATen/TensorOperators.h>

#include <algorithm>
#include <chrono>

namespace dotf {

namespace {

std::vector<double> column(const at::Tensor& similarity, int64_t col) {
  at::Tensor c = similarity.select(1, col).to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PlanPolicy::PlanPolicy(const Transformer& model, const GenerateOptions& options, const std::optional<LayerPlan>& fixed,
                       bool quantized_draft, PlanStats& stats)
    : model_(model), options_(options), fixed_(fixed), quantized_draft_(quantized_draft), stats_(stats),
      full_(LayerPlan::full(model.config().num_layers)) {}

bool PlanPolicy::cost_rule() const { return options_.rule == SelectionRule::Cost && !fixed_; }

void PlanPolicy::start(const ForwardOutput& prefill) {
  const auto t = std::chrono::steady_clock::now();
  const at::Tensor& similarity =
      options_.similarity == SimilarityAggregate::Last ? prefill.last_similarity : prefill.similarity;
  stats_.attention_similarity = column(similarity, 0);
  stats_.mlp_similarity = column(similarity, 1);
  if (fixed_) {
    set_plan(*fixed_);
  } else if (cost_rule()) {
    // Warm-up rounds draft with nothing skipped: they measure the acceptance the model starts from.
    cost_attention_similarity_ = stats_.attention_similarity;
    cost_mlp_similarity_ = stats_.mlp_similarity;
    set_plan(full_);
  } else {
    set_plan(select_draft_plan(stats_.attention_similarity, options_.selection));
  }
  selection_seconds_ += seconds_since(t);
}

void PlanPolicy::set_plan(const LayerPlan& plan) {
  plan_ = plan;
  stats_.skipped_attention = plan.skipped_attention();
  stats_.skipped_mlp = plan.skipped_mlp();
  // The model's own weights under a plan that skips nothing cost a full step per draft token: no win.
  // (The cost rule's warm-up and profiled steps draft with the full plan on purpose: they measure.)
  model_draft_ = quantized_draft_ || !plan.is_full() || (cost_rule() && (stats_.cost_selections == 0 || profile_pending_));
  stats_.note = model_draft_ ? "" : "no sublayer selected for skipping: the model does not draft";
}

std::vector<double>* PlanPolicy::profile_target(int64_t rows) {
  return profile_pending_ && rows == 1 && plan_.is_full() ? &profile_ : nullptr;
}

void PlanPolicy::profile_taken() {
  profile_pending_ = false;
  profiled_ = true;
}

void PlanPolicy::after_round(double verify_seconds, int64_t model_drafted, int64_t model_accepted,
                             const at::Tensor& similarity, int64_t positions) {
  since_choice_.drafted += model_drafted;
  since_choice_.accepted += model_accepted;
  if (cost_rule()) track_cost_rounds(verify_seconds);
  if (similarity.defined()) maybe_reselect(similarity, positions);
}

void PlanPolicy::maybe_reselect(const at::Tensor& similarity, int64_t positions) {
  at::Tensor weighted = similarity * static_cast<double>(positions);
  recent_sum_ = recent_sum_.defined() ? recent_sum_ + weighted : weighted;
  recent_positions_ += positions;
  if (++rounds_since_select_ < options_.reselect_every) return;
  const at::Tensor mean = recent_sum_ / static_cast<double>(recent_positions_);
  const std::vector<double> s = column(mean, 0);
  recent_sum_ = at::Tensor();
  recent_positions_ = 0;
  rounds_since_select_ = 0;
  if (cost_rule()) {  // new similarities; the next full-plan draft step re-measures the costs
    cost_attention_similarity_ = s;
    cost_mlp_similarity_ = column(mean, 1);
    reselect_pending_ = true;
    return;
  }
  LayerPlan plan = select_draft_plan(s, options_.selection);
  if (plan.attention != plan_.attention) {
    set_plan(plan);
    stats_.reselections += 1;
  }
}

void PlanPolicy::track_cost_rounds(double verify_seconds) {
  since_choice_.rounds += 1;
  since_choice_.verify_seconds += verify_seconds;
  if (stats_.predicted_acceptance >= 0 && since_choice_.drafted > 0) stats_.plan_acceptance = since_choice_.acceptance(0);
  const bool due =
      (stats_.cost_selections == 0 && since_choice_.rounds >= options_.cost_warmup_rounds) || reselect_pending_;
  if (due && !profiled_ && !profile_pending_) {
    reselect_pending_ = false;
    profile_pending_ = true;
    plan_before_profile_ = plan_;
    set_plan(full_);  // one draft step of every sublayer, timed
    return;
  }
  if (profiled_) select_by_cost();
}

void PlanPolicy::select_by_cost() {
  const auto t = std::chrono::steady_clock::now();
  const int64_t L = model_.config().num_layers;
  CostModelInputs in;
  in.attention_similarity = cost_attention_similarity_;
  in.mlp_similarity = cost_mlp_similarity_;
  in.costs.attention.resize(L);
  in.costs.mlp.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    in.costs.attention[l] = profile_[2 * l];
    in.costs.mlp[l] = profile_[2 * l + 1];
  }
  in.costs.rest = profile_[2 * L];
  // Acceptance with nothing skipped, backed out of what the plan in use achieved.
  const double measured = since_choice_.acceptance(/*if_none=*/0.9);
  const double factor = acceptance_factor(plan_before_profile_, in.attention_similarity, in.mlp_similarity,
                                          options_.sensitivity);
  in.base_acceptance = std::min(1.0, measured / std::max(factor, 1e-6));
  in.verify_seconds = since_choice_.verify_seconds / static_cast<double>(since_choice_.rounds);
  in.max_draft = options_.max_draft;
  in.keep_first = options_.selection.keep_first;
  in.sensitivity = options_.sensitivity;
  const CostAwareChoice choice = select_cost_aware(in);
  set_plan(choice.plan);
  stats_.predicted_acceptance = choice.predicted_acceptance;
  stats_.predicted_gain = choice.full_plan_tokens_per_second > 0
                              ? choice.predicted_tokens_per_second / choice.full_plan_tokens_per_second
                              : 1.0;
  stats_.cost_selections += 1;
  profiled_ = false;
  since_choice_ = {};
  selection_seconds_ += seconds_since(t);
}

}  // namespace dotf
