// Draft plan selection: the paper's threshold rule (tau, keep_first, budget) and the cost model behind
// dotf's cost rule.
#include "speculative/cost_model.h"
#include "speculative/selection.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace dotf;

TEST(Selection, ThresholdKeepFirstBudget) {
  const std::vector<double> s{0.999, 0.5, 0.99, 0.995, 0.97, 0.999, 0.992, 0.98};
  EXPECT_EQ(select_draft_plan(s, {0.99, 1.0, 1}).skipped_attention(), (std::vector<int64_t>{2, 3, 5, 6}));
  EXPECT_EQ(select_draft_plan(s, {0.99, 1.0, 0}).skipped_attention(), (std::vector<int64_t>{0, 2, 3, 5, 6}));
  EXPECT_EQ(select_draft_plan(s, {0.99, 0.25, 1}).skipped_attention(), (std::vector<int64_t>{3, 5}));
  EXPECT_TRUE(select_draft_plan(s, {0.99, 0.0, 1}).is_full());
  EXPECT_TRUE(select_draft_plan({NAN, NAN}, {-1.0, 1.0, 0}).is_full());
  EXPECT_TRUE(select_draft_plan(s, {0.99, 1.0, 1}).skipped_mlp().empty());
}

TEST(CostModel, PredictedRateFollowsTheFormula) {
  // a = 1: every draft accepted, so k tokens + 1 bonus per round of k drafts and one verify.
  EXPECT_DOUBLE_EQ(predicted_rate(1.0, 0.1, 1.0, 1), 2.0 / 1.1);
  EXPECT_DOUBLE_EQ(predicted_rate(1.0, 0.1, 1.0, 12), 13.0 / 2.2);
  // a = 0.5, k = 1: (1 - 0.25) / 0.5 = 1.5 tokens per round.
  EXPECT_NEAR(predicted_rate(0.5, 1.0, 1.0, 1), 1.5 / 2.0, 1e-12);
}

TEST(CostModel, SkipsCheapLossesKeepsExpensiveOnesAndTheFirstLayer) {
  CostModelInputs in;
  //                       layer 0   layer 1   layer 2   layer 3
  in.attention_similarity = {0.5, 0.9999, 0.90, 0.9999};
  in.mlp_similarity = {0.5, 0.60, 0.70, NAN};
  in.costs.attention = {1.0, 1.0, 1.0, 1.0};
  in.costs.mlp = {1.0, 1.0, 1.0, 1.0};
  in.costs.rest = 1.0;
  in.base_acceptance = 0.9;
  in.verify_seconds = 9.0;
  in.keep_first = 1;
  in.sensitivity = 10.0;
  const CostAwareChoice c = select_cost_aware(in);
  // Near-identity attention of layers 1 and 3 goes; layer 0 (keep_first), the dissimilar MLPs and the
  // unmeasured (NaN) MLP of layer 3 stay.
  EXPECT_EQ(c.plan.skipped_attention(), (std::vector<int64_t>{1, 3}));
  EXPECT_TRUE(c.plan.skipped_mlp().empty());
  EXPECT_NEAR(c.predicted_acceptance, 0.9 * std::exp(-10.0 * 0.0002), 1e-12);
  EXPECT_GT(c.predicted_tokens_per_second, c.full_plan_tokens_per_second);

  in.sensitivity = 1e6;  // any loss is prohibitive
  EXPECT_TRUE(select_cost_aware(in).plan.is_full());
  in.sensitivity = 0.0;  // losses are free: everything measurable past keep_first goes
  const CostAwareChoice all = select_cost_aware(in);
  EXPECT_EQ(all.plan.skipped_attention(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(all.plan.skipped_mlp(), (std::vector<int64_t>{1, 2}));
}
