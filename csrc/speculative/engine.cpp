#include "speculative/engine.h"

#include "core/check.h"
#include "core/memory.h"
#include "speculative/acceptance.h"
#include "speculative/policies/draft_kv.h"

#include <algorithm>

namespace dotf {

GenerateRequest Engine::request(Strategy strategy) const {
  GenerateRequest r;
  r.strategy = strategy;
  r.options = preset(strategy, model_->device().type());
  return r;
}

int64_t Engine::cache_rows(int64_t prompt_tokens, const GenerateRequest& request) {
  return prompt_tokens + request.options.max_new_tokens;
}

std::shared_ptr<const ModelWeights> Engine::draft_weights(DraftWeights kind) {
  if (kind == DraftWeights::Same) return nullptr;
  DOTF_CHECK_ARG(model_->device().is_cpu(), "draft='int8' is available on CPU only; use draft='same' on ",
                 model_->device());
  std::lock_guard<std::mutex> lock(mutex_);
  if (!int8_draft_) {
    // One int8 copy of the LM head, not two: the draft's head is the screen's where that exists.
    const bool share = lm_head_screen_ && lm_head_screen_->int8().path() == int8_draft_path();
    int8_draft_ = std::make_shared<ModelWeights>(
        model_->weights().with_linear_path(int8_draft_path(), share ? &lm_head_screen_->int8() : nullptr));
  }
  return int8_draft_;
}

std::shared_ptr<const LinearScreen> Engine::lm_head_screen() {
  const Linear& head = model_->weights().lm_head;
  if (!LinearScreen::supports(head)) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  if (!lm_head_screen_) {
    // The same sharing the other way round: the int8 draft's head where that exists.
    std::optional<Linear> int8;
    if (int8_draft_ && int8_draft_->lm_head.path() == LinearPath::Int8Avx2 &&
        int8_draft_->lm_head.weight().is_same(head.weight()))
      int8 = int8_draft_->lm_head;
    lm_head_screen_ = std::make_shared<const LinearScreen>(head, std::move(int8));
  }
  return lm_head_screen_;
}

int64_t Engine::draft_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return int8_draft_ ? int8_draft_->extra_bytes() : 0;
}

int64_t Engine::lm_head_screen_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lm_head_screen_ ? lm_head_screen_->extra_bytes() : 0;
}

void Engine::release_draft() {
  std::lock_guard<std::mutex> lock(mutex_);
  // Calls in flight keep their own references alive.
  int8_draft_.reset();
  lm_head_screen_.reset();
}

GraphStats Engine::graph_stats() const {
  std::lock_guard<std::mutex> lock(graphs_mutex_);
  return graphs_ ? graphs_->stats() : GraphStats{};
}

void Engine::release_graphs() {
  std::lock_guard<std::mutex> lock(graphs_mutex_);
  graphs_.reset();
  graph_cache_ = KVCache();
}

void Engine::check_cache_fits(int64_t prompt_tokens, int64_t rows, const GenerateRequest& request) const {
  // "ar" never drafts, so it never adds the mirror whatever draft_kv says.
  const bool mirror = request.strategy != Strategy::AR && request.options.draft_kv == DraftKV::Int8;
  const int64_t need = model_->cache_bytes(rows, mirror), available = available_memory_bytes();
  DOTF_CHECK_MEMORY(available < 0 || need <= available, "the KV cache for prompt (", prompt_tokens,
                    " tokens) + max_new_tokens (", request.options.max_new_tokens, ") takes ", need >> 20, " MiB (",
                    model_->cache_bytes(1, mirror), " bytes per position", mirror ? ", with the int8 mirror" : "",
                    "), more than the ", available >> 20,
                    " MiB of memory available: shorten the prompt or lower max_new_tokens");
}

GenerateRequest Engine::resolve_draft_kv(GenerateRequest request, int64_t rows) {
  GenerateOptions& o = request.options;
  if (o.draft_kv != DraftKV::Auto) return request;
  if (request.strategy == Strategy::AR) {  // never drafts: nothing to weigh
    o.draft_kv = DraftKV::Same;
    return request;
  }
  const bool cuda = model_->device().is_cuda();
  DraftKvBytes bytes;
  if (!cuda) {  // on CUDA auto is "same" whatever the bytes
    const std::shared_ptr<const ModelWeights> draft = draft_weights(o.draft);  // built at first use anyway
    bytes.draft_weights = (draft ? *draft : model_->weights()).step_bytes();
    bytes.exact_per_position = model_->cache_bytes(1, false);
    bytes.mirror_per_position = model_->cache_bytes(1, true) - bytes.exact_per_position;
    bytes.positions = rows;
  }
  const DraftKvChoice choice = dotf::resolve_draft_kv(o, cuda, bytes);
  o.draft_kv = choice.kv;
  o.draft_window = choice.window;
  return request;
}

DecodeResult Engine::generate(const at::Tensor& prompt, const GenerateRequest& given, KVCache* cache) {
  const Transformer& m = *model_;
  validate(given.options, given.strategy);  // before the cache is sized from max_new_tokens
  DOTF_CHECK_DIM(prompt, 1, "input_ids");
  const int64_t rows = cache_rows(prompt.size(0), given);
  DOTF_CHECK_ARG(rows <= m.max_seq_len(), "prompt (", prompt.size(0), " tokens) + max_new_tokens (",
                 given.options.max_new_tokens, ") exceeds max_seq_len=", m.max_seq_len(), " (a KV cache of ",
                 m.max_seq_len(), " positions takes ", m.cache_bytes(m.max_seq_len(), false) / (1 << 20), " MiB in ",
                 m.dtype(), ")");
  // After the checks above: resolving "auto" may build the int8 draft, which a refused call should not pay.
  const GenerateRequest request = resolve_draft_kv(given, rows);
  if (!cache && m.device().is_cpu()) check_cache_fits(prompt.size(0), rows, request);

  // CUDA graphs, when free: they and the cache they were captured with serve this call.
  std::unique_lock<std::mutex> graph_lock(graphs_mutex_, std::defer_lock);
  GraphedForward* graphs = nullptr;
  std::string graphs_note;
  if (!request.options.cuda_graphs) graphs_note = "cuda_graphs=False";
  else if (!m.device().is_cuda()) graphs_note = "CPU model";
  else if (!graph_lock.try_lock()) graphs_note = "another call holds this model's graphs";
  else {
    if (!graphs_) graphs_ = std::make_unique<GraphedForward>(m);
    graphs = graphs_.get();
    if (!cache) {
      // Grown in steps of 1024 rows so that a slightly longer request keeps the captured graphs.
      if (!graph_cache_.defined() || graph_cache_.capacity() < rows)
        graph_cache_ = m.new_cache(std::min(m.max_seq_len(), (rows + 1023) / 1024 * 1024));
      cache = &graph_cache_;
    }
  }
  KVCache local;
  if (!cache) {
    local = m.new_cache(rows);
    cache = &local;
  }
  // Held for the whole call: release_draft() from another thread cannot pull it away.
  const int64_t k = logits_read(request.options);
  const std::shared_ptr<const LinearScreen> screen =
      request.options.lm_head_screen && k > 0 && k <= kScreenMaxTopK ? lm_head_screen() : nullptr;
  const GraphStats before = graphs ? graphs->stats() : GraphStats{};
  DecodeResult result = request.strategy == Strategy::AR
                            ? decode_ar(m, prompt, *cache, request, graphs, screen.get())
                            : generate_speculative(prompt, request, *cache, graphs, screen.get());
  result.stats.memory = {cache->nbytes(), cache->int8_mirror_nbytes()};
  if (graphs) result.stats.graphs = graphs->stats().since(before);
  else result.stats.graphs.disabled_reason = graphs_note;
  return result;
}

DecodeResult Engine::generate_speculative(const at::Tensor& prompt, const GenerateRequest& request, KVCache& cache,
                                          GraphedForward* graphs, const LinearScreen* lm_head_screen) {
  const GenerateOptions& o = request.options;
  // Held for the whole call: release_draft() from another thread cannot pull it away.
  const std::shared_ptr<const ModelWeights> draft = draft_weights(o.draft);
  const bool margin_exit = o.draft_exit == DraftExit::Margin;
  AdaptiveGamma exit{margin_exit ? o.margin : o.gamma, o.alpha, 0.0, o.adaptive_gamma};
  double& carried = margin_exit ? carried_margin_ : carried_gamma_;
  if (o.carry_gamma) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (carried >= 0) exit.gamma = carried;
  }
  DecodeResult result = decode_speculative(*model_, prompt, cache, request, draft.get(), exit, graphs, lm_head_screen);
  if (!o.adaptive_gamma) return result;
  std::lock_guard<std::mutex> lock(mutex_);
  // Draft & Verify's rule has no bounds: a long call can end with gamma outside (0, 1) (or a margin
  // below 0), which the next call's validation would then reject as if the caller had passed it.
  // Carry a valid value.
  carried = margin_exit ? std::max(exit.gamma, 0.0) : std::clamp(exit.gamma, 0.01, 0.99);
  return result;
}

}  // namespace dotf
