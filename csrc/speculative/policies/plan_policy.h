#pragma once
// Which draft plan the model drafter runs under, and when it changes:
//   * at the prefill: a fixed plan (draft_attention/draft_mlp), the paper's similarity threshold
//     (speculative/selection.h), or, under the cost rule, nothing skipped for cost_warmup_rounds rounds
//     that measure the acceptance the model starts from;
//   * online re-selection (reselect_every): the verify pass measures similarities on its positions
//     (fused, no extra pass); every N rounds their mean re-selects the plan;
//   * the cost rule (speculative/cost_model.h): after the warm-up and at each re-selection, one draft
//     step of every sublayer is profiled, then the plan the cost model predicts fastest is chosen.
// Only host timers and counters the loop already keeps: no extra pass, no extra device sync.
#include "model/layer_plan.h"
#include "model/transformer.h"
#include "speculative/options.h"
#include "speculative/stats.h"

#include <optional>
#include <vector>

namespace dotf {

class PlanPolicy {
 public:
  // quantized_draft: the draft runs on derived weights, so even a plan that skips nothing drafts cheaply.
  PlanPolicy(const Transformer& model, const GenerateOptions& options, const std::optional<LayerPlan>& fixed,
             bool quantized_draft, PlanStats& stats);

  // Chooses the first plan from the prefill's similarities.
  void start(const ForwardOutput& prefill);
  const LayerPlan& plan() const { return plan_; }
  // False when the model would draft with its own weights skipping nothing: a full step per draft token.
  bool model_drafts() const { return model_draft_; }
  // Whether verify passes should measure similarities (re-selection is on).
  bool measures_verify() const { return options_.reselect_every > 0; }
  // Host seconds spent choosing plans (the prefill's choice and the cost rule's).
  double selection_seconds() const { return selection_seconds_; }

  // The cost rule wants one plain one-token draft step of every sublayer timed: where that step's
  // per-sublayer seconds go (nullptr when no profile is wanted for a pass of `rows` rows).
  std::vector<double>* profile_target(int64_t rows);
  void profile_taken();

  // After a round that drafted: its verify seconds, the draft model's own drafted and accepted tokens, and
  // the verify pass's similarity [L, 2] over `positions` positions (undefined unless measures_verify()).
  void after_round(double verify_seconds, int64_t model_drafted, int64_t model_accepted, const at::Tensor& similarity,
                   int64_t positions);

 private:
  bool cost_rule() const;
  void set_plan(const LayerPlan& plan);
  void track_cost_rounds(double verify_seconds);
  void select_by_cost();
  void maybe_reselect(const at::Tensor& similarity, int64_t positions);

  const Transformer& model_;
  const GenerateOptions& options_;
  const std::optional<LayerPlan>& fixed_;
  const bool quantized_draft_;
  PlanStats& stats_;
  const LayerPlan full_;
  LayerPlan plan_;
  bool model_draft_ = false;
  double selection_seconds_ = 0;
  // Re-selection: similarity summed over recent verify positions.
  at::Tensor recent_sum_;  // [L, 2]
  int64_t recent_positions_ = 0;
  int64_t rounds_since_select_ = 0;
  // Cost rule.
  std::vector<double> cost_attention_similarity_, cost_mlp_similarity_;
  std::vector<double> profile_;  // [2L + 1] seconds of the profiled draft step
  bool profile_pending_ = false, profiled_ = false, reselect_pending_ = false;
  LayerPlan plan_before_profile_;
  struct SinceChoice {
    int64_t rounds = 0, drafted = 0, accepted = 0;  // the draft model's own tokens only
    double verify_seconds = 0;
    double acceptance(double if_none) const {
      return drafted > 0 ? static_cast<double>(accepted) / static_cast<double>(drafted) : if_none;
    }
  } since_choice_;
};

}  // namespace dotf
