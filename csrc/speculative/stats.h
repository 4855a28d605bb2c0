#pragma once
// Figures about one generate call, one struct per concern, filled in by the loop, the drafters and the
// policies; the bindings turn them into the documented Python dict (csrc/python/convert.cpp).
#include "model/graphed_forward.h"
#include "speculative/options.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dotf {

// Why generation ended: an EOS token, max_new_tokens, or the caller's on_tokens asked (a stop string).
enum class StopReason { Running, Eos, MaxNewTokens, Caller };
template <> struct EnumNames<StopReason> {
  static constexpr const char* what = "stop_reason";
  static constexpr std::pair<StopReason, const char*> entries[] = {{StopReason::Running, ""},
                                                                    {StopReason::Eos, "eos"},
                                                                    {StopReason::MaxNewTokens, "max_new_tokens"},
                                                                    {StopReason::Caller, "stop"}};
};

// Where a drafted token came from.
enum class DraftSource { Model, Lookup };
inline constexpr int kDraftSources = 2;
template <> struct EnumNames<DraftSource> {
  static constexpr const char* what = "draft source";
  static constexpr std::pair<DraftSource, const char*> entries[] = {{DraftSource::Model, "model"},
                                                                     {DraftSource::Lookup, "lookup"}};
};

// Wall seconds of each phase.
struct TimeStats {
  double total = 0, prefill = 0, selection = 0, draft = 0, verify = 0;
};

// Speculative rounds: each drafts some tokens and runs one full-model verify forward.
struct RoundStats {
  int64_t rounds = 0;
  int64_t drafted = 0;
  int64_t accepted = 0;
  int64_t round_tokens = 0;          // tokens emitted by rounds (accepted drafts + one each)
  int64_t plain_steps = 0;           // steps decoded without drafting (fallback, end of output)
  int64_t draft_cap_sum = 0;         // the rounds' caps on their draft length (max_draft, or cost_draft_length's)
  std::vector<int64_t> drafted_at;   // [max_draft]: rounds that drafted a token at position i
  std::vector<int64_t> accepted_at;  // [max_draft]: rounds that accepted the draft at position i
  // Sampling: min(1, p / q) summed over the rounds whose acceptance test reached position i, and their count.
  std::vector<double> acceptance_probability_sum_at;  // [max_draft]
  std::vector<int64_t> acceptance_tests_at;          // [max_draft]

  double acceptance_rate() const { return drafted ? static_cast<double>(accepted) / drafted : 0.0; }
  double mean_accepted_length() const { return rounds ? static_cast<double>(round_tokens) / rounds : 0.0; }
  double mean_draft_cap() const { return rounds ? static_cast<double>(draft_cap_sum) / rounds : 0.0; }
};

// One drafter's proposals and how many the verify pass accepted.
struct SourceStats {
  int64_t drafted = 0, accepted = 0;
};

// The draft exit: what its threshold thresholds and the value it started and ended the call with.
struct ExitStats {
  DraftExit exit = DraftExit::Probability;
  double initial = 0, final = 0;
};

// The draft plan and how it was chosen.
struct PlanStats {
  std::vector<int64_t> skipped_attention, skipped_mlp;
  std::vector<double> attention_similarity, mlp_similarity;  // per layer, from the prefill
  int64_t reselections = 0;  // times online re-selection changed the plan
  std::string note;          // why the plan is what it is (e.g. nothing passed the threshold)
  // The cost rule: what its model predicted for the plan it chose and what the draft model then achieved
  // with that plan (accepted / drafted of its own tokens since the choice).
  int64_t cost_selections = 0;
  double predicted_acceptance = -1, predicted_gain = -1;  // gain: predicted rate / rate skipping nothing
  double plan_acceptance = -1;
};

// Bytes of the call's KV cache and of the draft's int8 mirror of it (0 without one).
struct MemoryStats {
  int64_t kv_cache = 0, kv_mirror = 0;
};

struct DecodeStats {
  Strategy strategy = Strategy::AR;
  StopReason stop_reason = StopReason::Running;
  int64_t prompt_tokens = 0;
  int64_t new_tokens = 0;
  TimeStats time;
  RoundStats rounds;
  std::array<SourceStats, kDraftSources> by_source;  // indexed by DraftSource
  ExitStats exit;
  PlanStats plan;
  int64_t fallback_switches = 0;  // times the break-even rule switched to plain steps
  MemoryStats memory;
  // The KV rows the draft read and its window, draft_kv="auto" resolved (speculative/policies/draft_kv.h).
  DraftKV draft_kv = DraftKV::Same;
  int64_t draft_window = 0;
  // CUDA graphs during this call; graphs.disabled_reason says why they were not used, when they were not.
  GraphStats graphs;

  SourceStats& source(DraftSource s) { return by_source[static_cast<int>(s)]; }
  const SourceStats& source(DraftSource s) const { return by_source[static_cast<int>(s)]; }
  double tokens_per_second() const { return time.total > 0 ? new_tokens / time.total : 0.0; }
};

}  // namespace dotf
