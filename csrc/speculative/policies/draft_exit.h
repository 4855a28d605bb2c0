#pragma once
// The adaptive draft exit: the model draft stops after a token whose confidence (its top-1 probability,
// or its top-two logit margin: GenerateOptions::draft_exit) is below a threshold, and the threshold
// follows Draft & Verify's rule (Zhang et al. 2023, arXiv 2309.08168) after every round:
//   a = accepted / drafted;  m <- 0.5 m + 0.5 a;
//   proposal = gamma + 0.01 if m < alpha, else (gamma if the round drafted max_draft tokens, else gamma - 0.01);
//   gamma <- 0.9 gamma + 0.1 proposal.
// With `adaptive` off, gamma keeps its initial value (the fixed-gamma ablation); m is still tracked.
#include "speculative/options.h"

#include <cstdint>

namespace dotf {

struct AdaptiveGamma {
  double gamma = 0.6;
  double alpha = 0.9;
  double m = 0.0;  // smoothed acceptance
  bool adaptive = true;

  // Whether drafting stops after a token of this confidence.
  bool stops(double confidence) const { return confidence < gamma; }

  // A round that drafted nothing carries no evidence and leaves the state as it is.
  void update(int64_t accepted, int64_t drafted, bool hit_max_draft) {
    if (drafted <= 0) return;
    const double a = static_cast<double>(accepted) / static_cast<double>(drafted);
    m = 0.5 * m + 0.5 * a;
    if (!adaptive) return;
    double proposal = gamma;
    if (m < alpha) proposal = gamma + 0.01;
    else if (!hit_max_draft) proposal = gamma - 0.01;
    gamma = 0.9 * gamma + 0.1 * proposal;
  }
};

// The option that holds the initial threshold of an exit: "gamma" (probability) or "margin" (logits).
inline const char* threshold_option(DraftExit exit) { return exit == DraftExit::Margin ? "margin" : "gamma"; }

// Range-checks a threshold (carried over or given) as its option: ValueError naming it.
inline void validate_exit_threshold(DraftExit exit, double threshold) {
  find_option(threshold_option(exit)).check(threshold);
}

}  // namespace dotf
