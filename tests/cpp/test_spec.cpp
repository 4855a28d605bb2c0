// Draft selection rules, the adaptive gamma rule, and ASD == AR on a tiny model.
#include "speculative/cost_model.h"
#include "speculative/loop.h"
#include "speculative/policies/draft_exit.h"
#include "speculative/selection.h"
#include "tiny_model.h"

#include <ATen/ops/arange.h>
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

// 40 tokens of the tiny model after a 20-token prompt, plainly and speculatively (every attention
// sublayer past the first layer skipped in the draft), each in its own cache.
namespace {
struct PlainAndSpeculative {
  DecodeResult ar, asd;
};
PlainAndSpeculative decode_both(AdaptiveGamma& gamma) {
  auto model = fixtures::tiny_model();
  at::Tensor prompt = at::arange(10, 30, at::TensorOptions().dtype(at::kLong));
  GenerateRequest request;
  request.strategy = Strategy::ASD;
  request.options.max_new_tokens = 40;
  request.options.selection = {0.0, 1.0, 1};
  KVCache c1 = model->new_cache(60), c2 = model->new_cache(60);
  DecodeResult ar = decode_ar(*model, prompt, c1, request);
  return {std::move(ar), decode_speculative(*model, prompt, c2, request, nullptr, gamma)};
}
}  // namespace

TEST(Decoder, FixedGammaKeepsItsValueAndStaysLossless) {
  AdaptiveGamma gamma{0.3, 0.9, 0.0, /*adaptive=*/false};
  const auto [ar, asd] = decode_both(gamma);
  EXPECT_EQ(asd.tokens, ar.tokens);
  EXPECT_GT(asd.stats.rounds.rounds, 1);
  EXPECT_EQ(asd.stats.exit.initial, 0.3);
  EXPECT_EQ(asd.stats.exit.final, 0.3);
}

TEST(Decoder, SpeculativeEqualsPlainGreedy) {
  AdaptiveGamma gamma;
  const auto [ar, asd] = decode_both(gamma);
  EXPECT_EQ(asd.tokens, ar.tokens);
  EXPECT_EQ(static_cast<int64_t>(asd.tokens.size()), 40);
  EXPECT_GT(asd.stats.rounds.drafted, 0);
  EXPECT_LE(asd.stats.rounds.accepted, asd.stats.rounds.drafted);
}
