// The adaptive gamma rule of the draft exit (draft and verify), and gamma held fixed when adaptation is off.
#include "speculative/policies/draft_exit.h"

#include <gtest/gtest.h>

using namespace dotf;

TEST(AdaptiveGamma, FollowsDraftAndVerifyRule) {
  AdaptiveGamma g{0.6, 0.9, 0.0};
  g.update(1, 4, false);  // m = 0.125 < alpha: proposal 0.61
  EXPECT_NEAR(g.gamma, 0.601, 1e-12);
  EXPECT_NEAR(g.m, 0.125, 1e-12);
  g.m = 0.95;
  const double before = g.gamma;
  g.update(12, 12, true);  // m >= alpha at max length: hold
  EXPECT_NEAR(g.gamma, before, 1e-12);
  g.update(6, 6, false);  // m >= alpha, short round: proposal gamma - 0.01
  EXPECT_NEAR(g.gamma, before - 0.001, 1e-12);
  const AdaptiveGamma copy = g;
  g.update(0, 0, false);  // no drafts, no evidence
  EXPECT_EQ(g.gamma, copy.gamma);
  EXPECT_EQ(g.m, copy.m);
}

TEST(AdaptiveGamma, FixedWhenAdaptationIsOff) {
  AdaptiveGamma g{0.4, 0.9, 0.0, /*adaptive=*/false};
  g.update(1, 4, false);  // low acceptance: the adaptive rule would raise gamma
  g.update(0, 3, false);
  g.m = 0.95;
  g.update(6, 6, false);  // high acceptance, short round: the adaptive rule would lower it
  g.update(12, 12, true);
  EXPECT_EQ(g.gamma, 0.4);
  EXPECT_NEAR(g.m, 0.5 * (0.5 * 0.95 + 0.5) + 0.5, 1e-12);  // acceptance is still tracked
}
