#pragma once
// Greedy decoding loops: plain autoregressive ("ar") and adaptive self-speculative ("asd"):
// prefill (measuring similarities) -> select the draft plan -> draft until the draft's confidence
// drops below gamma -> verify all drafts in one full-model forward -> accept the longest matching
// prefix plus the full model's next token -> roll the cache back by moving its length.
// Both loops return exactly the full model's greedy tokens.
#include "cache/kv_cache.h"
#include "model/graphed_forward.h"
#include "model/transformer.h"
#include "speculative/adaptive_gamma.h"
#include "speculative/break_even.h"
#include "speculative/cost_model.h"
#include "speculative/ngram_lookup.h"
#include "speculative/selection.h"
#include "speculative/stats.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace dotf {

struct DecodeOptions {
  int64_t max_new_tokens = 64;
  std::vector<int64_t> eos_token_ids;
  // Called with each chunk of new tokens as it is produced; may throw to stop the call.
  std::function<void(const std::vector<int64_t>&)> on_tokens;
  // Called between steps/rounds; throws to cancel (the bindings raise KeyboardInterrupt here).
  std::function<void()> check_interrupt;
};

// When the model draft stops (after the token that trips it):
//   Probability: its top-1 probability < gamma (the paper's rule, Draft & Verify's);
//   Margin: its top-1 logit minus the runner-up < gamma (in logits; dotf's rule for a quantized
//   self-draft, which disagrees with the full model only where rounding can swap its top two).
enum class DraftExit { Probability, Margin };
std::string to_string(DraftExit exit);
DraftExit draft_exit_from_string(const std::string& name);  // ValueError for unknown names

struct SpecOptions {
  SelectionOptions selection;
  DraftExit draft_exit = DraftExit::Probability;  // what gamma (AdaptiveGamma) thresholds
  bool use_last_position = false;   // aggregate similarity at the last prompt position instead of the mean
  int64_t max_draft = 12;           // K_max
  std::optional<LayerPlan> plan;    // a fixed draft plan (skips selection), for experiments and tests

  // Beyond the paper (all off for strategy "asd"):
  const ModelWeights* draft_weights = nullptr;  // e.g. an int8 copy; nullptr drafts with the model's own
  bool lookup = false;              // n-gram lookup drafts from prompt + output, before the model draft
  bool lookup_every_step = false;   // ... and again after every model draft token, not only at round start
  NgramLookupOptions lookup_options;
  bool break_even = false;          // decode plainly while speculation is slower than plain steps
  BreakEven::Options break_even_options;
  int64_t reselect_every = 0;       // re-select the plan from verify-pass similarities every N rounds (0: never)
  // How the plan is chosen: the paper's similarity threshold (`selection`), or dotf's cost model
  // (speculative/cost_model.h) after `cost_warmup_rounds` rounds that measure the unskipped draft's acceptance.
  enum class Rule { Threshold, Cost };
  Rule rule = Rule::Threshold;
  double sensitivity = 10.0;        // lambda of the cost model
  int64_t cost_warmup_rounds = 3;
};

struct DecodeResult {
  std::vector<int64_t> tokens;
  DecodeStats stats;
};

// Throws ValueError for options out of range.
void validate(const DecodeOptions& options, int64_t vocab_size);
// gamma in (0, 1) for the probability exit, a finite margin >= 0 for the margin exit.
void validate_exit_threshold(DraftExit exit, double threshold);
void validate(const SpecOptions& options, const AdaptiveGamma& gamma, int64_t num_layers);

// prompt: [P] int64. The cache must be empty-able and hold P + max_new_tokens (+ max_draft for asd).
// `graphs`, when given, runs the decode/draft/verify forwards (CUDA graph replays on a CUDA model);
// without it every forward is eager. The tokens are the same either way.
DecodeResult decode_ar(const Transformer& model, const at::Tensor& prompt, KVCache& cache, const DecodeOptions& options,
                       GraphedForward* graphs = nullptr);
// The speculative loop; SpecOptions{} with a selection is the paper's ASD. `gamma` is read and
// updated in place so that callers can carry it across calls.
DecodeResult decode_speculative(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                                const DecodeOptions& options, const SpecOptions& spec, AdaptiveGamma& gamma,
                                GraphedForward* graphs = nullptr);

}  // namespace dotf
