#pragma once
// One loaded model and what persists between generate calls: the carried-over exit thresholds, the
// weights derived from the model (the int8 draft and the LM-head screen, each built on first use) and,
// on CUDA, the captured step graphs with the KV cache they write. A CUDA call that finds the graphs
// free takes them and their cache for the call (graphs stay valid across calls only if the cache does);
// a call that finds them busy (a concurrent call) or a CPU call gets its own cache sized to the request
// and runs eagerly, so concurrent calls never share mutable state.
#include "model/transformer.h"
#include "speculative/loop.h"

#include <memory>
#include <mutex>

namespace dotf {

class Engine {
 public:
  explicit Engine(std::shared_ptr<const Transformer> model) : model_(std::move(model)) {}

  const Transformer& model() const { return *model_; }
  // A request for `strategy` with its defaults on this model's device.
  GenerateRequest request(Strategy strategy) const;
  // Runs a request; with `cache` given, decodes into it (tests inspect it afterwards).
  DecodeResult generate(const at::Tensor& prompt, const GenerateRequest& request, KVCache* cache = nullptr);
  // Cache rows a request needs: prompt + new tokens (verify never writes past that, see loop.cpp).
  static int64_t cache_rows(int64_t prompt_tokens, const GenerateRequest& request);

  // Bytes held by the derived weights (0 until a request needed them), and a way to free them all. The
  // int8 draft and the LM-head screen share one int8 copy of the head, which both counts include.
  int64_t draft_bytes() const;
  int64_t lm_head_screen_bytes() const;
  void release_draft();
  // The derived draft weights (built on first use); nullptr for the model's own.
  std::shared_ptr<const ModelWeights> draft_weights(DraftWeights kind);
  // The LM head's screen (ops/linear_screen.h; option lm_head_screen), built on first use; nullptr where
  // the head's path has none (CUDA, CPUs without AVX2, fp16/fp64 heads).
  std::shared_ptr<const LinearScreen> lm_head_screen();

  // Totals of the step graphs over this Engine's calls (all zero on CPU), and a way to free them.
  GraphStats graph_stats() const;
  void release_graphs();

 private:
  // MemoryError with the sizes when a CPU cache of `rows` positions (and the draft's int8 mirror where the
  // request adds one) would not fit in the machine's available memory (core/memory.h).
  void check_cache_fits(int64_t prompt_tokens, int64_t rows, const GenerateRequest& request) const;
  // The request with draft_kv="auto" resolved for a cache of `rows` positions (speculative/policies/draft_kv.h).
  GenerateRequest resolve_draft_kv(GenerateRequest request, int64_t rows);
  DecodeResult generate_speculative(const at::Tensor& prompt, const GenerateRequest& request, KVCache& cache,
                                    GraphedForward* graphs, const LinearScreen* lm_head_screen);

  std::shared_ptr<const Transformer> model_;
  mutable std::mutex mutex_;
  double carried_gamma_ = -1;   // < 0: nothing carried yet
  double carried_margin_ = -1;  // the same for the margin exit (another scale)
  std::shared_ptr<const ModelWeights> int8_draft_;
  std::shared_ptr<const LinearScreen> lm_head_screen_;
  // CUDA step graphs and the cache they were captured with; graphs_mutex_ is held for a whole call.
  mutable std::mutex graphs_mutex_;
  std::unique_ptr<GraphedForward> graphs_;
  KVCache graph_cache_;
};

}  // namespace dotf
