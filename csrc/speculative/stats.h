#pragma once
// Figures about one generate call, filled in by the decode loops and handed to Python as a dict.
#include "model/graphed_forward.h"

#include <cstdint>
#include <string>
#include <vector>

namespace dotf {

struct DecodeStats {
  std::string strategy;
  std::string stop_reason;  // "eos" or "max_new_tokens"
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  double seconds = 0, prefill_seconds = 0, selection_seconds = 0, draft_seconds = 0, verify_seconds = 0;

  // Speculative rounds: each drafts some tokens and runs one full-model verify forward.
  int64_t rounds = 0;
  int64_t drafted = 0;
  int64_t accepted = 0;
  int64_t round_tokens = 0;              // tokens emitted by rounds (accepted drafts + one each)
  std::vector<int64_t> drafted_at;       // [max_draft]: rounds that drafted a token at position i
  std::vector<int64_t> accepted_at;      // [max_draft]: rounds that accepted the draft at position i
  std::string draft_exit;  // "probability" or "margin": what the gamma values below threshold
  double initial_gamma = 0, final_gamma = 0;
  // Where drafts came from: index 0 the draft model, 1 n-gram lookup.
  int64_t drafted_by_source[2] = {0, 0};
  int64_t accepted_by_source[2] = {0, 0};
  int64_t plain_steps = 0;               // steps decoded without drafting (fallback, end of output)
  int64_t fallback_switches = 0;         // times the break-even rule switched to plain steps
  int64_t reselections = 0;              // times online re-selection changed the plan

  std::vector<int64_t> skipped_attention, skipped_mlp;      // the draft plan
  std::vector<double> attention_similarity, mlp_similarity;  // per layer, from the prefill
  // Cost-aware selection (rule "cost"): what the model predicted for the plan it chose and what the
  // draft model then achieved with that plan (accepted / drafted of its own tokens since the choice).
  double predicted_acceptance = -1, predicted_gain = -1;  // gain: predicted rate / rate skipping nothing
  double plan_acceptance = -1;
  int64_t cost_selections = 0;
  std::string plan_note;                 // why the plan is what it is (e.g. nothing passed the threshold)

  // CUDA graphs during this call; graphs.disabled_reason says why they were not used, when they were not.
  GraphStats graphs;

  double acceptance_rate() const { return drafted ? static_cast<double>(accepted) / drafted : 0.0; }
  double mean_accepted_length() const { return rounds ? static_cast<double>(round_tokens) / rounds : 0.0; }
  double tokens_per_second() const { return seconds > 0 ? new_tokens / seconds : 0.0; }
};

}  // namespace dotf
