#pragma once
// The decoding loops. Plain ("ar"): prefill, then one full-model step per token. Speculative ("asd",
// "dotf"): prefill (measuring similarities) -> choose the draft plan -> propose (drafters) -> verify
// [last, d1..dk] in one full-model forward -> accept (a rule) -> roll the cache back by moving its
// length -> repeat. Under the greedy rule both return exactly the full model's greedy tokens.
#include "cache/kv_cache.h"
#include "model/graphed_forward.h"
#include "model/transformer.h"
#include "speculative/policies/draft_exit.h"
#include "speculative/request.h"
#include "speculative/stats.h"

#include <vector>

namespace dotf {

struct DecodeResult {
  std::vector<int64_t> tokens;
  DecodeStats stats;
};

// prompt: [P] int64 CPU. The cache must hold P + max_new_tokens rows (verify never writes past them).
// `graphs`, when given, runs the decode/draft/verify forwards (CUDA graph replays on a CUDA model);
// without it every forward is eager. `lm_head_screen`, when given (a screen of the model's head), serves
// the full model's passes wherever the rule reads only the largest logits (logits_read, acceptance.h).
// The tokens are the same either way.
DecodeResult decode_ar(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                       const GenerateRequest& request, GraphedForward* graphs = nullptr,
                       const LinearScreen* lm_head_screen = nullptr);

// `draft_weights`: the draft's linear weights (nullptr: the model's own). `exit` holds the draft-exit
// threshold; it is read and updated in place so that callers can carry it across calls.
DecodeResult decode_speculative(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                                const GenerateRequest& request, const ModelWeights* draft_weights, AdaptiveGamma& exit,
                                GraphedForward* graphs = nullptr, const LinearScreen* lm_head_screen = nullptr);

}  // namespace dotf
