// KV cache invariants: truncate is O(1) and exact; re-appending after a rollback reproduces logits.
#include "cache/kv_cache.h"
#include "core/check.h"
#include "tiny_model.h"

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
