// The cost-aware draft length: the verify line it fits from timed passes, and the cap it derives from it.
#include "speculative/policies/draft_length.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

using namespace dotf;

namespace {
// A verify pass of `rows` rows on a machine where the first row costs `first` and each further one `per_row`.
double verify_seconds(int64_t rows, double first, double per_row) { return first + per_row * (rows - 1); }

// The k in [1, max_draft] with the highest predicted rate, by brute force.
int64_t best_cap(double a, double draft, double first, double per_row, int64_t max_draft) {
  int64_t best = 1;
  for (int64_t k = 2; k <= max_draft; ++k)
    if (DraftLength::predicted_rate(a, k, draft, first, per_row) > DraftLength::predicted_rate(a, best, draft, first, per_row))
      best = k;
  return best;
}
}  // namespace

TEST(DraftLength, StaysAtMaxDraftUntilTheVerifyLineIsKnown) {
  DraftLength length(8);
  EXPECT_EQ(length.cap(), 8);
  for (int i = 0; i < 20; ++i) length.record_round(0.010, 8, 8, 4, 9, 0.100);  // every pass has 9 rows
  double first = 0, per_row = 0;
  EXPECT_FALSE(length.verify_line(first, per_row));
  EXPECT_EQ(length.cap(), 8);
}

TEST(DraftLength, FitsTheVerifyLineAndCapsWhereRowsAreExpensive) {
  // Long context: a verify row costs a tenth of the first and a draft token 0.15 of it, acceptance 0.75:
  // the best cap is 3 (rates 17.5, 19.3, 19.5, 19.1 tokens/s for caps 1-4).
  const double first = 0.080, per_row = 0.008, draft = 0.012;
  DraftLength length(8);
  length.record_plain(verify_seconds(1, first, per_row));
  length.record_plain(verify_seconds(1, first, per_row));
  for (int i = 0; i < 30; ++i) {
    const int64_t k = 2 + i % 7;  // rounds of 2..8 drafts, 3 of 4 accepted
    length.record_round(draft * k, k, 4 * k, 3 * k, k + 1, verify_seconds(k + 1, first, per_row));
  }
  double fitted_first = 0, fitted_per_row = 0;
  ASSERT_TRUE(length.verify_line(fitted_first, fitted_per_row));
  EXPECT_NEAR(fitted_first, first, 1e-9);
  EXPECT_NEAR(fitted_per_row, per_row, 1e-9);
  EXPECT_NEAR(length.draft_token_seconds(), draft, 1e-12);
  EXPECT_NEAR(length.acceptance(), 0.75, 1e-12);
  const int64_t expected = best_cap(0.75, draft, first, per_row, 8);
  EXPECT_EQ(length.cap(), expected);
  EXPECT_EQ(expected, 3);
}

TEST(DraftLength, KeepsLongRoundsWhereRowsAreCheapAndDraftsAgree) {
  const double first = 0.030, per_row = 0.0005, draft = 0.003;
  DraftLength length(8);
  for (int i = 0; i < 30; ++i) {
    const int64_t k = 1 + i % 8;
    length.record_round(draft * k, k, k, k, k + 1, verify_seconds(k + 1, first, per_row));  // all accepted
  }
  EXPECT_EQ(length.cap(), 8);
}

TEST(DraftLength, PredictedRateIsTheExpectedTokensOverTheRoundsCost) {
  // a = 0.5, k = 2: E = 1 + 0.5 + 0.25 = 1.75 tokens for 2 * (0.01 + 0.002) + 0.05 seconds.
  EXPECT_NEAR(DraftLength::predicted_rate(0.5, 2, 0.01, 0.05, 0.002), 1.75 / 0.074, 1e-9);
  // Acceptance 1 is clamped below 1 (the geometric sum's limit stays finite).
  EXPECT_TRUE(std::isfinite(DraftLength::predicted_rate(1.0, 8, 0.01, 0.05, 0.002)));
}

TEST(DraftLength, ACapThatStopsVaryingTheRowsGrowsBackTowardMaxDraft) {
  const double first = 0.080, per_row = 0.008, draft = 0.012;
  DraftLength length(8);
  for (int i = 0; i < 30; ++i) {
    const int64_t k = 2 + i % 7;
    length.record_round(draft * k, k, 4 * k, 3 * k, k + 1, verify_seconds(k + 1, first, per_row));
  }
  ASSERT_EQ(length.cap(), 3);
  // Then many rounds of exactly 2 drafts: the spread of rows fades with the decay, and the cap probes upward.
  int64_t highest = length.cap();
  for (int i = 0; i < 200; ++i) {
    length.record_round(draft * 2, 2, 8, 6, 3, verify_seconds(3, first, per_row));
    highest = std::max(highest, length.cap());
  }
  EXPECT_GT(highest, 3);
}
