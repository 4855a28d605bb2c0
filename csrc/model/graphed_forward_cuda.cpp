// GraphedForward's CUDA graph state: capture, replay and the graphs kept per key. Compiled in CUDA
// builds only (CMakeLists.txt: *_cuda.cpp); graphed_forward_cpu_only.cpp stands in without CUDA.
#include "model/graphed_forward.h"

#include "core/check.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <map>
#include <tuple>

namespace dotf {

struct GraphedForward::Impl {
  struct Key {
    std::string plan;
    int64_t tokens;
    LogitsFor logits;
    bool similarity;
    const ModelWeights* weights;
    int64_t max_start;
    bool operator<(const Key& o) const {
      return std::tie(plan, tokens, logits, similarity, weights, max_start) <
             std::tie(o.plan, o.tokens, o.logits, o.similarity, o.weights, o.max_start);
    }
  };
  struct Entry {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    ForwardOutput out;  // the graph's output buffers
    uint64_t last_used = 0;
  };

  std::map<Key, Entry> graphs;
  uint64_t clock = 0;
  at::Tensor inputs;             // [1 + max_tokens] int64 on the device: start, then the tokens
  const void* cache_id = nullptr;  // the cache the graphs write (its key buffer)
  std::optional<c10::cuda::CUDAStream> side;  // captures run here (never on the default stream)
  bool warmed = false;

  void evict_to(size_t n) {
    while (graphs.size() > n) {
      auto oldest = graphs.begin();
      for (auto it = graphs.begin(); it != graphs.end(); ++it)
        if (it->second.last_used < oldest->second.last_used) oldest = it;
      graphs.erase(oldest);
    }
  }
};

GraphedForward::GraphedForward(const Transformer& model, GraphOptions options)
    : model_(model), options_(options) {
  DOTF_CHECK_ARG(options.max_tokens >= 1, "graph max_tokens must be >= 1, got ", options.max_tokens);
  DOTF_CHECK_ARG(options.max_graphs >= 1, "graph max_graphs must be >= 1, got ", options.max_graphs);
  DOTF_CHECK_ARG(options.min_bucket >= 1, "graph min_bucket must be >= 1, got ", options.min_bucket);
  if (model.device().is_cuda()) impl_ = std::make_unique<Impl>();
  if (!options.enabled) stats_.disabled_reason = "disabled by the caller";
  else if (!impl_) stats_.disabled_reason = "CUDA graphs need a CUDA model";
}

GraphedForward::~GraphedForward() = default;

int64_t GraphedForward::graphs() const { return impl_ ? static_cast<int64_t>(impl_->graphs.size()) : 0; }

void GraphedForward::clear() {
  if (!impl_) return;
  impl_->graphs.clear();
  impl_->cache_id = nullptr;
}

bool GraphedForward::serves(int64_t tokens, const ForwardOptions& options) const {
  return impl_ && stats_.disabled_reason.empty() && tokens >= 1 && tokens <= options_.max_tokens &&
         options.sublayer_seconds == nullptr && !options.device_start.defined() && options.lm_head_screen == nullptr;
}

ForwardOutput GraphedForward::forward(const std::vector<int64_t>& tokens, int64_t start, KVCache& cache,
                                      const LayerPlan& plan, const ForwardOptions& options,
                                      const ModelWeights* weights) {
  const auto T = static_cast<int64_t>(tokens.size());
  if (!serves(T, options)) return eager(tokens, start, cache, plan, options, weights);
  // A replay skips Transformer::forward: its checks first, and the cache must be on the model's device.
  model_.check_forward_args(T, start, cache, plan);
  DOTF_CHECK_ARG(cache.key_buffer().device() == model_.device(), "cache is on ", cache.key_buffer().device(),
                 ", the model on ", model_.device());

  Impl& s = *impl_;
  const c10::cuda::CUDAGuard device_guard(model_.device());
  if (cache.key_buffer().data_ptr() != s.cache_id) {  // graphs write the cache they were captured with
    s.graphs.clear();
    s.cache_id = cache.key_buffer().data_ptr();
  }
  if (!s.inputs.defined())
    s.inputs = at::empty({1 + options_.max_tokens}, at::TensorOptions().dtype(at::kLong).device(model_.device()));
  std::vector<int64_t> host{start};
  host.insert(host.end(), tokens.begin(), tokens.end());
  // Stream-ordered before the replay, and no host wait: a copy from pageable memory is staged before
  // cudaMemcpyAsync returns, so the temporary host tensor may go right away.
  s.inputs.narrow(0, 0, T + 1).copy_(token_tensor(host), /*non_blocking=*/true);

  const int64_t max_start = graph_bucket_max_start(start, T, cache.capacity(), options_.min_bucket);
  const Impl::Key key{plan.key(), T, options.logits, options.similarity, weights, max_start};
  auto it = s.graphs.find(key);
  if (it == s.graphs.end()) {
    const auto t0 = std::chrono::steady_clock::now();
    Impl::Entry entry;
    entry.graph = std::make_unique<at::cuda::CUDAGraph>();
    const at::cuda::CUDAStream current = at::cuda::getCurrentCUDAStream();
    if (!s.side) s.side = at::cuda::getStreamFromPool(/*isHighPriority=*/false, model_.device().index());
    ForwardOptions captured = options;
    captured.device_start = s.inputs.narrow(0, 0, 1);
    captured.max_start = max_start;
    const at::Tensor ids = s.inputs.narrow(0, 1, T);
    try {
      at::cuda::CUDAEvent ready;  // the side stream starts after everything queued so far
      ready.record(current);
      ready.block(*s.side);
      {
        const c10::cuda::CUDAStreamGuard stream_guard(*s.side);
        // Lazy initialisations (cuBLAS handles and workspaces for this stream, kernel attributes)
        // must not happen inside a capture: one eager forward first. It writes the same cache rows
        // the replay below rewrites.
        if (!s.warmed) model_.forward(ids, start, cache, plan, captured, weights);
        s.warmed = true;
        entry.graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        try {
          entry.out = model_.forward(ids, start, cache, plan, captured, weights);
        } catch (...) {
          try { entry.graph->capture_end(); } catch (...) {}
          throw;
        }
        entry.graph->capture_end();
      }
      at::cuda::CUDAEvent captured_event;
      captured_event.record(*s.side);
      captured_event.block(current);
    } catch (const std::exception& e) {
      // Graphs stay off for this object; the eager forward gives the same result.
      stats_.disabled_reason = std::string("CUDA graph capture failed: ") + e.what();
      s.graphs.clear();
      return eager(tokens, start, cache, plan, options, weights);
    }
    stats_.captures += 1;
    stats_.capture_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s.evict_to(static_cast<size_t>(options_.max_graphs - 1));
    it = s.graphs.emplace(key, std::move(entry)).first;
  }
  it->second.last_used = ++s.clock;
  it->second.graph->replay();  // on the current stream, after the input copy
  cache.truncate(start);
  cache.append(T);
  stats_.replays += 1;
  return it->second.out;
}

}  // namespace dotf
