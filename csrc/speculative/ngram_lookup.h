#pragma once
// Prompt-lookup drafting (Saxena 2023; transformers' prompt_lookup_num_tokens): when the text being
// generated repeats an n-gram seen earlier in the prompt or output (summaries quote, code edits copy),
// propose the tokens that followed its most recent earlier occurrence. Costs no model forward.
#include <cstdint>
#include <vector>

namespace dotf {

struct NgramLookupOptions {
  int64_t max_ngram = 3;  // try the longest suffix first
  int64_t min_ngram = 2;  // shorter matches are too often coincidences to pay for their verify rows
  // Tokens proposed per lookup (whatever room the caller gives): the draft model checks m of them in
  // one pass of 1 + m rows, and from 3 rows an int8 draft pass costs about rows / 3 + 0.3 one-row passes
  // (compute-bound; SmolLM2, context 304), so a long wrong guess costs more than a right one saves.
  int64_t max_tokens = 4;
};

// history: prompt + emitted tokens. Returns up to min(room, options.max_tokens) continuation tokens
// (maybe none).
std::vector<int64_t> ngram_lookup(const std::vector<int64_t>& history, int64_t room,
                                  const NgramLookupOptions& options);

}  // namespace dotf
