#pragma once
// The cost-aware draft length (option cost_draft_length, dotf's): each round drafts at most the k that the
// measured costs predict fastest, instead of max_draft. A round of k drafts costs k draft steps and a verify
// pass of k + 1 rows, and emits E(a, k) = (1 - a^(k+1)) / (1 - a) tokens on average when each draft is
// accepted with probability a (Leviathan et al. 2023), so
//   cap = argmax over 1 <= k <= max_draft of  E(a, k) / (k * draft + verify(k + 1)).
// Why it is needed: a verify row costs little at short contexts but several ms at thousands of tokens,
// where the 9-row verify pass is bound by attention arithmetic (bench/README.md, "Long contexts"), so the
// best cap falls as the context grows.
// Inputs are what the loop times anyway, exponentially decayed so that they follow the context: seconds
// per model draft token, verify seconds against rows (a least-squares line; plain steps count as 1-row
// passes), and the acceptance of drafted tokens. Until the line is identified (rounds of different lengths)
// the cap is max_draft, and whenever recent rounds stop spreading their lengths it grows a step per round. The cap follows the clock, so the loop uses it for greedy calls only, where the
// tokens cannot depend on it (as for the break-even fallback).
#include "speculative/cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace dotf {

class DraftLength {
 public:
  explicit DraftLength(int64_t max_draft) : max_draft_(max_draft) {}

  // The most tokens the next round should draft, in [1, max_draft].
  int64_t cap() const { return cap_; }

  // A plain step: one 1-row pass of the full model.
  void record_plain(double seconds) { add_pass(1, seconds); }

  // A speculative round: the drafter's seconds and the model draft tokens it made, the tokens drafted in all
  // (lookups included) and accepted, and the verify pass of `rows` rows.
  void record_round(double draft_seconds, int64_t model_drafted, int64_t drafted, int64_t accepted, int64_t rows,
                    double verify_seconds) {
    if (model_drafted > 0) {
      draft_seconds_ = kDecay * draft_seconds_ + draft_seconds;
      draft_tokens_ = kDecay * draft_tokens_ + static_cast<double>(model_drafted);
    }
    drafted_ = kDecay * drafted_ + static_cast<double>(drafted);
    accepted_ = kDecay * accepted_ + static_cast<double>(accepted);
    add_pass(rows, verify_seconds);
    update_cap();
  }

  // The fit, for statistics and tests: seconds of a draft token, of a 1-row verify pass and of each further
  // row; acceptance; NaN while unknown.
  double draft_token_seconds() const { return draft_tokens_ > 0 ? draft_seconds_ / draft_tokens_ : NAN; }
  double acceptance() const { return drafted_ > 0 ? accepted_ / drafted_ : NAN; }
  bool verify_line(double& first_row, double& per_row) const {
    const double var = w_ * srr_ - sr_ * sr_;
    if (w_ <= 0 || var < kMinSpread * w_ * w_) return false;  // every pass had (nearly) the same rows
    per_row = (w_ * srs_ - sr_ * ss_) / var;
    first_row = (ss_ - per_row * sr_) / w_ + per_row;  // the line at rows = 1
    return std::isfinite(per_row) && std::isfinite(first_row);
  }

  // Tokens per second of rounds capped at k: E(a, k) / (k * draft + first_row + k * per_row).
  static double predicted_rate(double acceptance, int64_t k, double draft, double first_row, double per_row) {
    // Clamped below 1: a measured acceptance of 1 is a short sample, not a promise that every draft lands.
    const double tokens = expected_round_tokens(std::clamp(acceptance, 0.0, 0.999), k);
    return tokens / (static_cast<double>(k) * (draft + per_row) + first_row);
  }

 private:
  static constexpr double kDecay = 0.9;       // recent passes dominate: costs grow with the context
  static constexpr double kMinSpread = 0.25;  // variance of the rows (in rows^2) below which the slope is unknown

  void add_pass(int64_t rows, double seconds) {
    const double r = static_cast<double>(rows);
    w_ = kDecay * w_ + 1;
    sr_ = kDecay * sr_ + r;
    srr_ = kDecay * srr_ + r * r;
    ss_ = kDecay * ss_ + seconds;
    srs_ = kDecay * srs_ + r * seconds;
  }

  void update_cap() {
    double first_row = 0, per_row = 0;
    const double draft = draft_token_seconds(), a = acceptance();
    if (!std::isfinite(draft) || !std::isfinite(a)) return;
    if (!verify_line(first_row, per_row)) {
      // Recent passes all had about the same rows (say a cap of 2 held for a while): lengthen the rounds a
      // step at a time, which brings back the spread the line needs instead of freezing the cap.
      cap_ = std::min(max_draft_, cap_ + 1);
      return;
    }
    per_row = std::max(per_row, 0.0);  // noise can tilt the line; more rows never cost less
    first_row = std::max(first_row, 1e-9);
    int64_t best = 1;
    for (int64_t k = 2; k <= max_draft_; ++k) {
      if (predicted_rate(a, k, draft, first_row, per_row) > predicted_rate(a, best, draft, first_row, per_row))
        best = k;
    }
    cap_ = best;
  }

  const int64_t max_draft_;
  int64_t cap_ = max_draft_;
  double draft_seconds_ = 0, draft_tokens_ = 0, drafted_ = 0, accepted_ = 0;
  double w_ = 0, sr_ = 0, srr_ = 0, ss_ = 0, srs_ = 0;  // decayed sums for the verify line
};

}  // namespace dotf
