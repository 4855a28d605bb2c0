// KV cache invariants: truncate is O(1) and exact; re-appending after a rollback reproduces logits; the
// draft's int8 mirror follows the exact rows.
#include "cache/kv_cache.h"
#include "core/check.h"
#include "ops/attention_int8.h"
#include "tiny_model.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

using namespace dotf;

namespace {
at::Tensor ids(std::vector<int64_t> v) { return at::tensor(v, at::TensorOptions().dtype(at::kLong)); }
const ForwardOptions kAll{LogitsFor::All, false};
}  // namespace

TEST(KVCache, AppendAndTruncateMoveTheLengthOnly) {
  KVCache cache(2, 16, 2, 8, at::kFloat, at::kCPU);
  EXPECT_EQ(cache.length(), 0);
  cache.append(5);
  EXPECT_EQ(cache.length(), 5);
  const void* data = cache.keys(1).data_ptr();
  cache.truncate(2);
  EXPECT_EQ(cache.length(), 2);
  EXPECT_EQ(cache.keys(1).data_ptr(), data);
  EXPECT_THROW(cache.truncate(3), ValueError);
  EXPECT_THROW(cache.append(15), ValueError);
  cache.append(14);
  EXPECT_EQ(cache.length(), 16);
}

TEST(KVCache, LayerSlabsAreViewsOfOneBuffer) {
  KVCache cache(3, 10, 2, 4, at::kFloat, at::kCPU);
  EXPECT_EQ(cache.keys(2).sizes(), (std::vector<int64_t>{10, 2, 4}));
  EXPECT_TRUE(cache.keys(2).is_contiguous());
  EXPECT_EQ(static_cast<const char*>(cache.keys(2).data_ptr()) - static_cast<const char*>(cache.keys(0).data_ptr()),
            2 * 10 * 2 * 4 * 4);
  EXPECT_THROW(cache.keys(3), std::runtime_error);
}

TEST(KVCache, TruncateThenReappendGivesIdenticalLogits) {
  auto model = fixtures::tiny_model();
  const LayerPlan full = LayerPlan::full(model->config().num_layers);
  KVCache cache = model->new_cache(64);
  model->forward(at::arange(1, 21, at::TensorOptions().dtype(at::kLong)), 0, cache, full, kAll);
  at::Tensor first = model->forward(ids({40, 41, 42}), 20, cache, full, kAll).logits;
  cache.truncate(20);
  model->forward(ids({7, 8, 9, 10}), 20, cache, full, kAll);  // overwrite the rows
  cache.truncate(20);
  at::Tensor again = model->forward(ids({40, 41, 42}), 20, cache, full, kAll).logits;
  EXPECT_TRUE(at::equal(first, again));
}

TEST(KVCache, DraftRowsAreRewrittenByTheFullModel) {
  // A draft pass that skips attention leaves some layers' rows unwritten; verify rewrites all.
  auto model = fixtures::tiny_model();
  const int64_t L = model->config().num_layers;
  const LayerPlan full = LayerPlan::full(L);
  LayerPlan draft = full;
  draft.attention[1] = draft.attention[3] = false;
  KVCache a = model->new_cache(32), b = model->new_cache(32);
  at::Tensor prompt = at::arange(3, 13, at::TensorOptions().dtype(at::kLong));
  model->forward(prompt, 0, a, full, kAll);
  model->forward(prompt, 0, b, full, kAll);
  model->forward(ids({50}), 10, b, draft, kAll);
  model->forward(ids({51}), 11, b, draft, kAll);
  at::Tensor verify = model->forward(ids({50, 51}), 10, b, full, kAll).logits;
  at::Tensor plain = model->forward(ids({50, 51}), 10, a, full, kAll).logits;
  EXPECT_TRUE(at::equal(verify, plain));
  for (int64_t l = 0; l < L; ++l) EXPECT_TRUE(at::equal(a.keys(l).narrow(0, 0, 12), b.keys(l).narrow(0, 0, 12)));
}

namespace {
// The mirror of rows [0, n) of every layer, quantized afresh from the exact rows.
void expect_mirror_matches_exact_rows(KVCache& cache, int64_t n) {
  for (int64_t l = 0; l < cache.num_layers(); ++l) {
    at::Tensor kq = cache.int8_keys(l).clone(), vq = cache.int8_values(l).clone();
    at::Tensor ks = cache.key_scales(l).clone(), vs = cache.value_scales(l).clone();
    quantize_kv_rows(cache.keys(l), cache.values(l), 0, n, kq, vq, ks, vs);
    EXPECT_TRUE(at::equal(kq.narrow(1, 0, n), cache.int8_keys(l).narrow(1, 0, n))) << "layer " << l;
    EXPECT_TRUE(at::equal(vq.narrow(1, 0, n), cache.int8_values(l).narrow(1, 0, n))) << "layer " << l;
    EXPECT_TRUE(at::equal(ks.narrow(1, 0, n), cache.key_scales(l).narrow(1, 0, n))) << "layer " << l;
    EXPECT_TRUE(at::equal(vs.narrow(1, 0, n), cache.value_scales(l).narrow(1, 0, n))) << "layer " << l;
  }
}
}  // namespace

TEST(KVCache, Int8MirrorFollowsTheExactRowsThroughDraftsAndRollbacks) {
  // The draft's int8 mirror: quantized on creation from the rows already there, then written with every
  // exact row (draft passes reading it, verify passes not), one length for both.
  auto model = fixtures::tiny_model(at::kFloat);
  const int64_t L = model->config().num_layers;
  const LayerPlan full = LayerPlan::full(L);
  LayerPlan draft = full;
  draft.attention[1] = false;
  KVCache cache = model->new_cache(32), plain = model->new_cache(32);
  ForwardOptions int8_draft = kAll;
  int8_draft.int8_kv = true;
  at::Tensor prompt = at::arange(3, 13, at::TensorOptions().dtype(at::kLong));
  EXPECT_THROW(model->forward(prompt, 0, cache, full, int8_draft), ValueError);  // no mirror yet
  model->forward(prompt, 0, cache, full, kAll);
  model->forward(prompt, 0, plain, full, kAll);
  EXPECT_FALSE(cache.has_int8_mirror());
  EXPECT_EQ(cache.int8_mirror_nbytes(), 0);
  cache.add_int8_mirror();
  expect_mirror_matches_exact_rows(cache, 10);
  const int64_t layer_rows = 32 * model->config().num_kv_heads;
  EXPECT_EQ(cache.int8_mirror_nbytes(), L * 2 * layer_rows * (model->config().head_dim + 4));
  model->forward(ids({50}), 10, cache, draft, int8_draft);
  model->forward(ids({51}), 11, cache, draft, int8_draft);
  model->forward(ids({52}), 12, cache, draft, int8_draft);
  cache.truncate(10);  // rollback: one length for both
  at::Tensor verify = model->forward(ids({50, 60}), 10, cache, full, kAll).logits;
  at::Tensor exact = model->forward(ids({50, 60}), 10, plain, full, kAll).logits;
  EXPECT_TRUE(at::equal(verify, exact));  // the full model never reads the mirror
  EXPECT_EQ(cache.length(), 12);
  expect_mirror_matches_exact_rows(cache, 12);
  // A draft row over the mirror differs from the exact one only by the quantization.
  at::Tensor q = model->forward(ids({61}), 12, cache, full, int8_draft).logits;
  at::Tensor e = model->forward(ids({61}), 12, plain, full, kAll).logits;
  EXPECT_FALSE(at::equal(q, e));
  EXPECT_LT((q - e).abs().max().item().toFloat(), 0.05f * e.abs().max().item().toFloat());
}
