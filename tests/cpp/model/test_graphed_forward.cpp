// GraphedForward's host-side logic: the context buckets, and the eager path every CPU model (and any
// forward graphs do not serve) takes. Replays themselves need a GPU: tests/python/model/test_cuda_graphs.py.
#include "model/graphed_forward.h"

#include "tiny_model.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>
#include <gtest/gtest.h>

using namespace dotf;

TEST(GraphBuckets, PowersOfTwoFromTheMinimumClippedToTheCapacity) {
  // keys needed = start + T; the bucket is the next power of two from min_bucket; max_start = bucket - T.
  EXPECT_EQ(graph_bucket_max_start(0, 1, 4096, 256), 255);
  EXPECT_EQ(graph_bucket_max_start(255, 1, 4096, 256), 255);
  EXPECT_EQ(graph_bucket_max_start(256, 1, 4096, 256), 511);
  EXPECT_EQ(graph_bucket_max_start(300, 9, 4096, 256), 503);
  EXPECT_EQ(graph_bucket_max_start(3000, 9, 3100, 256), 3091);  // clipped: 4096 > capacity
  for (int64_t start = 0; start < 600; start += 7) {
    for (int64_t T : {1, 5, 13}) {
      const int64_t m = graph_bucket_max_start(start, T, 700, 16);
      EXPECT_GE(m, start);    // the capture serves this forward
      EXPECT_LE(m + T, 700);  // and never sizes past the cache
    }
  }
}

TEST(GraphedForward, CpuModelsRunEagerlyWithTheSameResult) {
  auto model = fixtures::tiny_model();
  GraphedForward graphs(*model);
  EXPECT_FALSE(graphs.stats().disabled_reason.empty());
  EXPECT_FALSE(graphs.serves(1, ForwardOptions{}));
  KVCache a = model->new_cache(16), b = model->new_cache(16);
  const LayerPlan full = LayerPlan::full(model->config().num_layers);
  const std::vector<int64_t> tokens{3, 1, 4, 1, 5};
  const ForwardOutput got = graphs.forward(tokens, 0, a, full, ForwardOptions{LogitsFor::All, true});
  const ForwardOutput want = model->forward(at::tensor(tokens, at::TensorOptions().dtype(at::kLong)), 0, b, full,
                                            ForwardOptions{LogitsFor::All, true});
  EXPECT_TRUE(at::equal(got.logits, want.logits));
  EXPECT_EQ(a.length(), 5);
  EXPECT_EQ(graphs.stats().eager, 1);
  EXPECT_EQ(graphs.stats().replays, 0);
  EXPECT_EQ(graphs.graphs(), 0);
}
