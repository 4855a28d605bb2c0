#pragma once
// The decoder-only transformer forward (Llama / Mistral / Qwen2 as Hugging Face defines them) over a
// KV cache, under a layer plan, measuring per-sublayer cosine similarities on the way.
#include "cache/kv_cache.h"
#include "model/config.h"
#include "model/layer_plan.h"
#include "model/weights.h"
#include "ops/linear_screen.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace dotf {

enum class LogitsFor { All, Last, None };

struct ForwardOptions {
  LogitsFor logits = LogitsFor::All;
  // Measure cos(h, h + sublayer(h)) per sublayer and position (fused with the residual add).
  bool similarity = false;
  // When set (CPU only: host timers around asynchronous GPU work would measure nothing), receives the
  // wall seconds of each sublayer: [2L + 1], entry 2l the attention of layer l, 2l + 1 its MLP (NaN
  // when skipped), 2L the rest (embedding, final norm, LM head). Feeds cost-aware selection.
  std::vector<double>* sublayer_seconds = nullptr;
  // For CUDA graph capture (model/graphed_forward.h): the kernels read the start position from this
  // [1] int64 device tensor instead of baking `start` into their launches, and size their launches
  // for any start up to `max_start` (>= start), so one capture replays at every position up to it.
  at::Tensor device_start;
  int64_t max_start = -1;
  // With a screen of this model's LM head (ops/linear_screen.h; Engine::lm_head_screen) and k =
  // logits_top_k > 0: the caller reads only each row's k largest logits (and every logit tied with the
  // k-th), so the head may leave the others at -inf. Forwards over other weights (a draft's) and heads
  // without a screen (CUDA) compute every logit, so CUDA graphs need not key on these.
  const LinearScreen* lm_head_screen = nullptr;
  int64_t logits_top_k = 0;
  // The draft's passes under draft_kv="int8": attention reads the cache's int8 mirror instead of the
  // exact rows (the cache must have one). The new rows are written to both either way.
  bool int8_kv = false;
  // The draft's passes under draft_window > 0: attention sees each row's attention sinks and last
  // `attention_window` keys only (ops/attention.h, kAttentionSinks; CPU). 0: every key.
  int64_t attention_window = 0;
  // When set, called after each decoder layer with the layer's index (prefill progress, interrupts).
  const std::function<void(int64_t)>* after_layer = nullptr;
};

struct ForwardOutput {
  at::Tensor logits;           // [T or 1, V] in the model dtype; undefined with LogitsFor::None
  at::Tensor similarity;       // [L, 2] float32, mean over the T positions; column 0 attention, 1 MLP; NaN if skipped
  at::Tensor last_similarity;  // [L, 2] float32, the last position's value
};

// Host token ids as the [T] int64 CPU tensor forward() takes.
at::Tensor token_tensor(const std::vector<int64_t>& tokens);

class Transformer {
 public:
  // weights must already be in their final dtype/device; max_seq_len bounds positions (rotary table).
  Transformer(ModelConfig config, ModelWeights weights, int64_t max_seq_len);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  at::ScalarType dtype() const { return weights_.embed.scalar_type(); }
  at::Device device() const { return weights_.embed.device(); }
  int64_t max_seq_len() const { return max_seq_len_; }

  KVCache new_cache(int64_t capacity) const;
  // Bytes new_cache(positions) takes, plus its int8 mirror's when asked.
  int64_t cache_bytes(int64_t positions, bool int8_mirror) const;

  // The checks forward() makes before it touches anything (also made by graph replays, which skip it):
  // T >= 1 tokens at start <= cache.length(), within the capacity, a cache and plan of this model.
  void check_forward_args(int64_t T, int64_t start, const KVCache& cache, const LayerPlan& plan) const;

  // tokens: [T] int64 at positions start..start+T-1. Rewrites the cache from `start` (which must be
  // <= cache.length()) for every layer whose attention runs; afterwards cache.length() == start + T.
  // `weights` overrides the linear layers' weights (a quantized draft copy); default: the model's.
  ForwardOutput forward(const at::Tensor& tokens, int64_t start, KVCache& cache, const LayerPlan& plan,
                        const ForwardOptions& options, const ModelWeights* weights = nullptr) const;

 private:
  ModelConfig config_;
  ModelWeights weights_;
  int64_t max_seq_len_;
  at::Tensor rope_cos_, rope_sin_;  // [max_seq_len, D/2] in the model dtype
};

}  // namespace dotf
