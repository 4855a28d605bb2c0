#pragma once
// Prompt-lookup drafting (Saxena 2023; transformers' prompt_lookup_num_tokens): when the text being
// generated repeats an n-gram seen earlier in the prompt or output (summaries quote, code edits copy),
// propose the tokens that followed its most recent earlier occurrence. Costs no model forward.
#include "speculative/drafter.h"
#include "speculative/options.h"

#include <cstdint>
#include <vector>

namespace dotf {

// Looks up the suffix of history ++ tail (tail: this round's drafts, not yet emitted). Returns up to
// min(room, options.max_tokens) continuation tokens (maybe none).
std::vector<int64_t> ngram_lookup(const std::vector<int64_t>& history, const std::vector<int64_t>& tail, int64_t room,
                                  const LookupOptions& options);

class LookupDrafter : public Drafter {
 public:
  explicit LookupDrafter(const LookupOptions& options) : options_(options) {}
  // Continues ctx.history ++ out.tokens.
  void propose(const DraftContext& ctx, int64_t max_tokens, Proposal& out) override;

 private:
  LookupOptions options_;
};

}  // namespace dotf
