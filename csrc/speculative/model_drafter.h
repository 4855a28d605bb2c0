#pragma once
// The model drafter: the model itself (its own weights or a quantized copy) under the draft plan,
// drafting one token per pass until the adaptive exit trips, max_tokens, or EOS. With a lookup drafter
// it also checks lookup proposals: they ride in its next pass over [last, l1..lm], are kept while the
// draft model agrees, and the draft model's own token replaces the first one it disagrees with. Wrong
// lookups thus cost one pass of 1 + m rows instead of a wasted verify, right ones come for that pass.
// Without the check (lookup_check=false) lookup proposals end the round's drafting and go to the verify
// as they are: the draft cannot continue after tokens whose rows it has not run.
#include "cache/kv_cache.h"
#include "model/graphed_forward.h"
#include "speculative/acceptance.h"
#include "speculative/drafter.h"
#include "speculative/lookup_drafter.h"
#include "speculative/policies/draft_exit.h"
#include "speculative/policies/plan_policy.h"

#include <vector>

namespace dotf {

struct ModelDrafterParts {
  GraphedForward& steps;         // forwards (CUDA graph replays where they serve)
  KVCache& cache;                // the draft writes its rows here; the verify rewrites them
  const ModelWeights* weights;   // nullptr: the model's own
  PlanPolicy& plan;              // the plan to draft under; also asks for the cost rule's profiled step
  AcceptanceRule& rule;          // chooses the draft's tokens and their confidence
  AdaptiveGamma& exit;           // the exit threshold
  DraftExit exit_kind;
  const std::vector<int64_t>& eos_token_ids;
  LookupDrafter* lookup;         // nullptr: no lookup proposals
  bool lookup_every_step;        // look up after every model token too, not only at the round's start
  bool lookup_check;             // the draft checks lookup proposals (else they go to the verify unchecked)
  bool int8_kv;                  // attention reads the cache's int8 mirror (draft_kv="int8")
  int64_t attention_window;      // attention sees the sinks and this many latest keys (draft_window; 0: all)
};

class ModelDrafter final : public Drafter {
 public:
  explicit ModelDrafter(ModelDrafterParts parts) : p_(parts) {}
  void propose(const DraftContext& ctx, int64_t max_tokens, Proposal& out) override;

 private:
  bool is_eos(int64_t token) const;
  ModelDrafterParts p_;
};

}  // namespace dotf
