// GraphedForward's host-side logic for every build: context buckets and the eager path. The graph
// state lives in graphed_forward_cuda.cpp (CUDA builds) or graphed_forward_cpu_only.cpp (CPU-only
// builds, where every forward is eager).
#include "model/graphed_forward.h"

#include <algorithm>

namespace dotf {

int64_t graph_bucket_max_start(int64_t start, int64_t tokens, int64_t capacity, int64_t min_bucket) {
  int64_t keys = std::max<int64_t>(min_bucket, 1);
  while (keys < start + tokens) keys *= 2;
  return std::min(keys, capacity) - tokens;
}

ForwardOutput GraphedForward::eager(const std::vector<int64_t>& tokens, int64_t start, KVCache& cache,
                                    const LayerPlan& plan, const ForwardOptions& options,
                                    const ModelWeights* weights) {
  stats_.eager += 1;
  return model_.forward(token_tensor(tokens).to(model_.device()), start, cache, plan, options, weights);
}

}  // namespace dotf
