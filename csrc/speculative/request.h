#pragma once
// One generate call as the engine and the loops receive it: the strategy, its options, and what is not
// an option (EOS ids, a fixed draft plan, callbacks).
#include "model/layer_plan.h"
#include "speculative/options.h"

#include <functional>
#include <optional>
#include <vector>

namespace dotf {

struct GenerateRequest {
  Strategy strategy = kDefaultStrategy;
  GenerateOptions options;  // preset(strategy, device) plus what the caller gave
  std::vector<int64_t> eos_token_ids;
  std::optional<LayerPlan> plan;  // a fixed draft plan instead of selection (experiments and tests)
  uint64_t seed = 0;              // sampling: the random stream's seed (core/random.h)
  // Called with each chunk of new tokens as it is produced; returns true to end generation after the
  // chunk (a stop string was completed), and may throw to abandon the call.
  std::function<bool(const std::vector<int64_t>&)> on_tokens;
  // Called between steps and rounds, and between the prefill's layers; throws to cancel (the bindings
  // raise KeyboardInterrupt here).
  std::function<void()> check_interrupt;
  // Called during the prefill after each decoder layer with (layers done, layers): a long prompt's
  // prefill takes seconds to minutes on a CPU (the CLI draws a progress bar). May throw to abandon the call.
  std::function<void(int64_t, int64_t)> on_prefill_progress;
};

}  // namespace dotf
