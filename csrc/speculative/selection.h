#pragma once
// Draft selection on the fly: which attention sublayers the draft model drops, decided from the
// cosine similarities the prefill measured (no extra pass, no calibration data).
//
// The paper's rule (Metel et al. 2024): drop attention sublayer l when s_l >= tau; MLPs are kept.
// Its two further deterministic rules are not public; dotf's two rules, each switchable, are:
//   1. keep_first: never drop the attention of the first k layers (their similarity is lowest and
//      their output feeds everything after them);
//   2. budget: drop at most floor(rho * L) attention sublayers; when more pass tau, drop the ones
//      with the highest similarity.
#include "model/layer_plan.h"
#include "speculative/options.h"

#include <cstdint>
#include <vector>

namespace dotf {

// attention_similarity: [L] per-layer s_l (NaN = not measured, never dropped).
LayerPlan select_draft_plan(const std::vector<double>& attention_similarity, const SelectionOptions& options);

// Throws ValueError naming the option when out of range (the ranges of speculative/options.cpp).
void validate(const SelectionOptions& options);

}  // namespace dotf
