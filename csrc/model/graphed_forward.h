#pragma once
// Decode, draft and verify forwards (a few tokens each) replayed from captured CUDA graphs.
//
// An eager step launches ~12 kernels per layer through ATen's dispatcher; on a GPU that host work,
// not the weights' bytes, sets the step time of small models (and a good part of a 7B's). A graph
// captured once per (plan, token count, logits rows, weights, context bucket) replays the whole
// forward with one launch. What changes between replays lives in one small device buffer that each
// replay refreshes with one copy: the start position and the tokens. The kernels read the position
// from it (ForwardOptions::device_start), so one capture serves every position of its context
// bucket; launches are sized for the bucket's end (attention splits past the real length stay
// empty). The KV cache's length stays on the host and moves exactly as Transformer::forward moves it.
//
// Graphs are bound to the cache they were captured with (its buffers' addresses): a forward with
// another cache drops them all. Anything graphs do not serve runs eagerly with the same result:
// CPU models, more tokens than max_tokens (prefills), per-sublayer profiling, or a capture that
// failed (graphs then stay off for this object and stats().disabled_reason says why).
#include "cache/kv_cache.h"
#include "model/layer_plan.h"
#include "model/transformer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dotf {

struct GraphOptions {
  bool enabled = true;
  int64_t max_tokens = 17;   // largest token count served by graphs (a verify of 16 drafts)
  int64_t max_graphs = 128;  // graphs kept; the least recently used one goes beyond this
  int64_t min_bucket = 256;  // context buckets (keys) are powers of two from here, up to the capacity
};

struct GraphStats {
  int64_t captures = 0;          // graphs captured
  int64_t replays = 0;           // forwards served by a replay
  int64_t eager = 0;             // forwards run eagerly (see above)
  double capture_seconds = 0;    // host time spent capturing (warm-up included)
  std::string disabled_reason;   // why graphs are off; empty while they are on

  // What happened since `before` (counts and seconds), with the current disabled_reason.
  GraphStats since(const GraphStats& before) const {
    return {captures - before.captures, replays - before.replays, eager - before.eager,
            capture_seconds - before.capture_seconds, disabled_reason};
  }
};

class GraphedForward {
 public:
  GraphedForward(const Transformer& model, GraphOptions options = {});
  ~GraphedForward();
  GraphedForward(const GraphedForward&) = delete;
  GraphedForward& operator=(const GraphedForward&) = delete;

  // Transformer::forward for tokens given on the host (same checks, same cache movement, same
  // numbers). A replay's output tensors are the graph's own buffers: read them before the next
  // forward through this object.
  ForwardOutput forward(const std::vector<int64_t>& tokens, int64_t start, KVCache& cache, const LayerPlan& plan,
                        const ForwardOptions& options, const ModelWeights* weights = nullptr);

  // Whether a forward of `tokens` tokens with these options would be served by a graph.
  bool serves(int64_t tokens, const ForwardOptions& options) const;
  const GraphStats& stats() const { return stats_; }
  int64_t graphs() const;
  // Drops every captured graph; their memory goes back to torch's allocator.
  void clear();

 private:
  ForwardOutput eager(const std::vector<int64_t>& tokens, int64_t start, KVCache& cache, const LayerPlan& plan,
                      const ForwardOptions& options, const ModelWeights* weights);

  struct Impl;
  const Transformer& model_;
  GraphOptions options_;
  GraphStats stats_;
  std::unique_ptr<Impl> impl_;  // the CUDA state; null in CPU-only builds
};

// The context bucket a graph is captured for: the largest start the capture serves, given the
// start and token count of the forward at hand. Launches are sized for max_start + tokens keys.
int64_t graph_bucket_max_start(int64_t start, int64_t tokens, int64_t capacity, int64_t min_bucket);

}  // namespace dotf
