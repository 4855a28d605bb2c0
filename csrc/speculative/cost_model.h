#pragma once
// Cost-aware draft selection (dotf's, beyond the paper): choose which attention AND MLP sublayers the
// draft skips by maximizing the predicted tokens per second, from
//   * the similarity s_i each sublayer showed (prefill, or recent verify passes; fused, free), and
//   * the measured seconds each sublayer costs in a draft step at the current context (a profiled
//     draft step: attention grows with the context, the MLP does not, so it is re-measured whenever
//     the plan is re-selected).
// The model (stated in bench/README.md, "Cost-aware selection"; checked against measured acceptance in
// bench/ablation.py):
//   acceptance   a(P) = a0 * exp(-lambda * sum_{i in P} (1 - s_i))        P: the skipped sublayers
//   draft step   c(P) = c_full_draft - sum_{i in P} cost_i
//   tokens/round E(a, k) = (1 - a^(k+1)) / (1 - a)                       (Leviathan et al. 2023)
//   rate(P)      = max_{1 <= k <= K_max} E(a(P), k) / (k * c(P) + c_verify)
// a0 is the acceptance measured with nothing skipped (or backed out of the current plan's measured
// acceptance); lambda ("sensitivity") says how fast acceptance falls as dissimilar sublayers go.
// Candidates are added greedily by cost saved per unit of (1 - s); the best prefix wins.
#include "model/layer_plan.h"
#include "speculative/options.h"

#include <cstdint>
#include <vector>

namespace dotf {

struct DraftCosts {
  std::vector<double> attention, mlp;  // [L] seconds per draft step; NaN = not measured
  double rest = 0;                     // embedding, final norm, LM head, everything not skippable
  double total() const;
};

struct CostModelInputs {
  std::vector<double> attention_similarity, mlp_similarity;  // [L]; NaN = unknown (never skipped)
  DraftCosts costs;
  double base_acceptance = 0.9;  // a0
  double verify_seconds = 0;     // c_verify, one verify pass
  int64_t max_draft = GenerateOptions{}.max_draft;                // K_max
  int64_t keep_first = GenerateOptions{}.selection.keep_first;    // layers whose sublayers are never skipped
  double sensitivity = GenerateOptions{}.sensitivity;             // lambda
};

struct CostAwareChoice {
  LayerPlan plan;
  double predicted_acceptance = 0;
  double predicted_tokens_per_second = 0;  // of the chosen plan
  double full_plan_tokens_per_second = 0;  // of skipping nothing, for comparison
};

// The acceptance factor exp(-lambda * sum (1 - s_i)) of a plan.
double acceptance_factor(const LayerPlan& plan, const std::vector<double>& attention_similarity,
                         const std::vector<double>& mlp_similarity, double sensitivity);

// E(a, k): the tokens a round of k drafts emits on average when each draft is accepted with probability a
// (k + 1 when a >= 1).
double expected_round_tokens(double acceptance, int64_t k);

// Predicted tokens per second of a draft with acceptance a and step cost c (see above).
double predicted_rate(double acceptance, double draft_seconds, double verify_seconds, int64_t max_draft);

CostAwareChoice select_cost_aware(const CostModelInputs& inputs);

}  // namespace dotf
