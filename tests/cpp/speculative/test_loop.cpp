// The speculative loop on a tiny model: ASD == AR, with an adaptive and with a fixed gamma.
#include "speculative/loop.h"
#include "tiny_model.h"

#include <ATen/ops/arange.h>
#include <gtest/gtest.h>

using namespace dotf;

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
