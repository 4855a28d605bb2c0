#pragma once
// Draft & Verify's adaptive draft-exit threshold (Zhang et al. 2023, arXiv 2309.08168):
//   a = accepted / drafted for the round;  m <- 0.5 m + 0.5 a;
//   proposal = gamma + 0.01 if m < alpha, else (gamma if the round drafted max_draft tokens, else gamma - 0.01);
//   gamma <- 0.9 gamma + 0.1 proposal.
// Drafting stops after a token whose top-1 draft probability is below gamma.
// With `adaptive` off, gamma keeps its initial value (the fixed-gamma ablation); m is still tracked.
#include <cstdint>

namespace dotf {

struct AdaptiveGamma {
  double gamma = 0.6;
  double alpha = 0.9;
  double m = 0.0;  // smoothed acceptance
  bool adaptive = true;

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

}  // namespace dotf
