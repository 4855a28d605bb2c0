// The Engine's derived weights: the int8 draft and the LM-head screen hold one int8 copy of the head
// between them, whichever is built first, and release_draft() frees both.
#include "ops/cpu/features.h"
#include "speculative/engine.h"
#include "tiny_model.h"

#include <gtest/gtest.h>

using namespace dotf;

TEST(Engine, DraftAndScreenShareOneInt8Head) {
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "this CPU lacks AVX2/FMA";
  const ModelConfig c = fixtures::tiny_config();
  for (const bool screen_first : {true, false}) {
    Engine engine(std::make_shared<Transformer>(
        c, build_weights(c, fixtures::random_tensors(c), at::kFloat, at::kCPU, LinearPath::Avx2Packed), 512));
    EXPECT_EQ(engine.lm_head_screen_bytes(), 0);  // built at first use
    std::shared_ptr<const LinearScreen> screen;
    std::shared_ptr<const ModelWeights> draft;
    if (screen_first) screen = engine.lm_head_screen();
    draft = engine.draft_weights(DraftWeights::Int8);
    if (!screen_first) screen = engine.lm_head_screen();
    ASSERT_TRUE(screen && draft);
    EXPECT_TRUE(screen->int8().int8_panels().packed.is_same(draft->lm_head.int8_panels().packed)) << screen_first;
    // The int8 panels of the [256, 64] head, a float scale per row, and four floats per row of bound terms.
    EXPECT_EQ(engine.lm_head_screen_bytes(), 256 * 64 + 256 * 4 + 256 * 16);
    engine.release_draft();
    EXPECT_EQ(engine.lm_head_screen_bytes(), 0);
    EXPECT_EQ(engine.draft_bytes(), 0);
  }
}

TEST(Engine, NoScreenForHeadsWithoutOne) {
  Engine engine(fixtures::tiny_model(at::kDouble));  // fp64 on ATen: MKL promises no per-column invariance
  EXPECT_EQ(engine.lm_head_screen(), nullptr);
  EXPECT_EQ(engine.lm_head_screen_bytes(), 0);
}
