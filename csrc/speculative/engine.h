#pragma once
// One loaded model and what persists between generate calls: the carried-over gamma, the draft
// weights derived from the model (built on first use) and, on CUDA, the captured step graphs with
// the KV cache they write. A CUDA call that finds the graphs free takes them and their cache for the
// call (graphs stay valid across calls only if the cache does); a call that finds them busy (a
// concurrent call) or a CPU call gets its own cache sized to the request and runs eagerly, so
// concurrent calls never share mutable state.
#include "model/transformer.h"
#include "speculative/decoder.h"

#include <memory>
#include <mutex>
#include <string>

namespace dotf {

// "ar": plain greedy. "asd": the paper (cosine-similarity draft, adaptive exit). "dotf": ours, on
// top of asd: a quantized self-draft, n-gram lookup drafts, break-even fallback (see README).
enum class Strategy { AR, ASD, DOTF };
Strategy strategy_from_string(const std::string& name);  // ValueError for unknown names

enum class DraftWeights { Same, Int8 };
DraftWeights draft_weights_from_string(const std::string& name);  // "same" | "int8"

struct GenerateRequest {
  Strategy strategy = Strategy::AR;
  DecodeOptions decode;
  SpecOptions spec;           // draft_weights is filled in by the Engine from `draft`
  DraftWeights draft = DraftWeights::Same;
  double gamma = 0.6;   // draft-exit threshold under DraftExit::Probability
  double margin = 0.1;  // ... and under DraftExit::Margin (logits)
  double alpha = 0.9;
  bool carry_gamma = false;  // start from (and update) the gamma the previous call ended with
  bool adaptive_gamma = true;  // false: gamma stays at `gamma` for the whole call (needs carry_gamma off)
  bool cuda_graphs = true;     // CUDA models: replay decode/draft/verify steps from CUDA graphs
};

class Engine {
 public:
  explicit Engine(std::shared_ptr<const Transformer> model) : model_(std::move(model)) {}

  const Transformer& model() const { return *model_; }
  // Runs a request; with `cache` given, decodes into it (tests inspect it afterwards).
  DecodeResult generate(const at::Tensor& prompt, const GenerateRequest& request, KVCache* cache = nullptr);
  // Cache rows a request needs: prompt + new tokens (verify never writes past that, see decoder.cpp).
  static int64_t cache_rows(int64_t prompt_tokens, const GenerateRequest& request);

  // Bytes held by derived draft weights (0 until a request needed them), and a way to free them.
  int64_t draft_bytes() const;
  void release_draft();
  // The derived draft weights (built on first use); nullptr for the model's own.
  std::shared_ptr<const ModelWeights> draft_weights(DraftWeights kind);

  // Totals of the step graphs over this Engine's calls (all zero on CPU), and a way to free them.
  GraphStats graph_stats() const;
  void release_graphs();

 private:
  std::shared_ptr<const Transformer> model_;
  mutable std::mutex mutex_;
  double carried_gamma_ = -1;   // < 0: nothing carried yet
  double carried_margin_ = -1;  // the same for the margin exit (another scale)
  std::shared_ptr<const ModelWeights> int8_draft_;
  // CUDA step graphs and the cache they were captured with; graphs_mutex_ is held for a whole call.
  mutable std::mutex graphs_mutex_;
  std::unique_ptr<GraphedForward> graphs_;
  KVCache graph_cache_;
};

}  // namespace dotf
