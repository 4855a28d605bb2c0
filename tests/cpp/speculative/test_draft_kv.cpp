// draft_kv="auto": the exact cache while its rows are a small share of a draft step's bytes, then the int8
// mirror, then a 1024-key window over it; explicit choices and CUDA models pass through untouched.
#include "speculative/policies/draft_kv.h"

#include <gtest/gtest.h>

using namespace dotf;

namespace {

GenerateOptions with_kv(DraftKV kv, int64_t window = 0) {
  GenerateOptions o;
  o.draft_kv = kv;
  o.draft_window = window;
  return o;
}

// SmolLM2-135M's int8 draft (135 MB) and fp32 cache: 46,080 exact and 12,240 mirror bytes per position.
DraftKvBytes smollm2(int64_t positions) { return {135'000'000, 46'080, 12'240, positions}; }

}  // namespace

TEST(DraftKvAuto, ExactCacheThenMirrorThenWindowAsTheContextGrows) {
  const GenerateOptions o = with_kv(DraftKV::Auto);
  // The exact rows outweigh 0.15 * 135 MB from 440 positions, the mirror's 0.25 * 135 MB from 2,758.
  for (const auto& [positions, kv, window] : {std::tuple{300, DraftKV::Same, 0}, {439, DraftKV::Same, 0},
                                              {440, DraftKV::Int8, 0}, {2048, DraftKV::Int8, 0},
                                              {2757, DraftKV::Int8, 0}, {2758, DraftKV::Int8, 1024},
                                              {8192, DraftKV::Int8, 1024}}) {
    const DraftKvChoice c = resolve_draft_kv(o, false, smollm2(positions));
    EXPECT_EQ(c.kv, kv) << positions;
    EXPECT_EQ(c.window, window) << positions;
  }
}

TEST(DraftKvAuto, ACallersWindowIsKept) {
  const DraftKvChoice c = resolve_draft_kv(with_kv(DraftKV::Auto, 512), false, smollm2(8192));
  EXPECT_EQ(c.kv, DraftKV::Int8);
  EXPECT_EQ(c.window, 512);
  // and below the mirror's threshold it applies over the exact cache
  const DraftKvChoice short_context = resolve_draft_kv(with_kv(DraftKV::Auto, 512), false, smollm2(300));
  EXPECT_EQ(short_context.kv, DraftKV::Same);
  EXPECT_EQ(short_context.window, 512);
}

TEST(DraftKvAuto, HeavyWeightsKeepTheExactCacheLonger) {
  // Qwen2.5-Coder-0.5B: a ~500 MB int8 draft, 24,576 exact and 6,528 mirror bytes per position: the
  // mirror from ~3k positions, the window only from ~19k.
  const DraftKvBytes qwen{500'000'000, 24'576, 6'528, 0};
  auto at = [&](int64_t positions) {
    DraftKvBytes b = qwen;
    b.positions = positions;
    return resolve_draft_kv(with_kv(DraftKV::Auto), false, b);
  };
  EXPECT_EQ(at(2048).kv, DraftKV::Same);
  EXPECT_EQ(at(4096).kv, DraftKV::Int8);
  EXPECT_EQ(at(8192).kv, DraftKV::Int8);
  EXPECT_EQ(at(8192).window, 0);
  EXPECT_EQ(at(32000).window, 1024);
}

TEST(DraftKvAuto, ExplicitChoicesAndCudaPassThrough) {
  for (const DraftKV kv : {DraftKV::Same, DraftKV::Int8}) {
    const DraftKvChoice c = resolve_draft_kv(with_kv(kv, 64), false, smollm2(8192));
    EXPECT_EQ(c.kv, kv);
    EXPECT_EQ(c.window, 64);
  }
  const DraftKvChoice cuda = resolve_draft_kv(with_kv(DraftKV::Auto), true, smollm2(8192));
  EXPECT_EQ(cuda.kv, DraftKV::Same);
  EXPECT_EQ(cuda.window, 0);
}
