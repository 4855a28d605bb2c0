#include "model/transformer.h"

#include "core/check.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/attention_int8.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/tensor.h>

#include <chrono>
#include <cmath>
#include <limits>

namespace dotf {

Transformer::Transformer(ModelConfig config, ModelWeights weights, int64_t max_seq_len)
    : config_(std::move(config)), weights_(std::move(weights)), max_seq_len_(max_seq_len) {
  config_.validate();
  DOTF_CHECK_ARG(max_seq_len > 0, "max_seq_len must be > 0, got ", max_seq_len);
  DOTF_CHECK(static_cast<int64_t>(weights_.layers.size()) == config_.num_layers, "weights have ",
             weights_.layers.size(), " layers, config says ", config_.num_layers);
  // Angles in float32, then cos/sin cast to the model dtype: what transformers' rotary module does.
  at::Tensor positions = at::arange(max_seq_len, at::TensorOptions().dtype(at::kFloat));
  at::Tensor angles = positions.unsqueeze(1) * config_.rope_inv_freq().unsqueeze(0);  // [P, D/2]
  rope_cos_ = at::cos(angles).to(device(), dtype()).contiguous();
  rope_sin_ = at::sin(angles).to(device(), dtype()).contiguous();
}

KVCache Transformer::new_cache(int64_t capacity) const {
  DOTF_CHECK_ARG(capacity > 0 && capacity <= max_seq_len_, "cache capacity must be in [1, max_seq_len=",
                 max_seq_len_, "], got ", capacity);
  return KVCache(config_.num_layers, capacity, config_.num_kv_heads, config_.head_dim, dtype(), device());
}

int64_t Transformer::cache_bytes(int64_t positions, bool int8_mirror) const {
  return positions *
         KVCache::bytes_per_position(config_.num_layers, config_.num_kv_heads, config_.head_dim, dtype(), int8_mirror);
}

at::Tensor token_tensor(const std::vector<int64_t>& tokens) {
  return at::tensor(tokens, at::TensorOptions().dtype(at::kLong));
}

void Transformer::check_forward_args(int64_t T, int64_t start, const KVCache& cache, const LayerPlan& plan) const {
  DOTF_CHECK_ARG(T > 0, "tokens must not be empty");
  DOTF_CHECK_ARG(start >= 0 && start <= cache.length(), "start position ", start, " must be in [0, cache length ",
                 cache.length(), "]");
  DOTF_CHECK_ARG(start + T <= cache.capacity(), "positions up to ", start + T, " exceed the cache capacity ",
                 cache.capacity());
  DOTF_CHECK_ARG(cache.num_layers() == config_.num_layers, "cache has ", cache.num_layers(), " layers, model has ",
                 config_.num_layers);
  plan.validate(config_.num_layers);
}

ForwardOutput Transformer::forward(const at::Tensor& tokens, int64_t start, KVCache& cache, const LayerPlan& plan,
                                   const ForwardOptions& options, const ModelWeights* override_weights) const {
  const ModelConfig& c = config_;
  const ModelWeights& w = override_weights ? *override_weights : weights_;
  DOTF_CHECK_DIM(tokens, 1, "tokens");
  DOTF_CHECK_DTYPE(tokens, at::kLong, "tokens");
  const int64_t T = tokens.size(0);
  check_forward_args(T, start, cache, plan);
  DOTF_CHECK_ARG(!options.int8_kv || cache.has_int8_mirror(), "forward: int8_kv needs a cache with an int8 mirror");
  const bool on_device_start = options.device_start.defined();
  if (on_device_start) {
    check_device_start(options.device_start, w.embed, "forward");
    DOTF_CHECK_ARG(options.max_start >= start && options.max_start + T <= cache.capacity(), "forward: max_start ",
                   options.max_start, " must be in [start=", start, ", cache capacity - T=", cache.capacity() - T, "]");
  }
  // What the kernels are told: the start itself, or its bound plus the device copy they read it from.
  const int64_t kernel_start = on_device_start ? options.max_start : start;

  cache.truncate(start);
  cache.append(T);

  const int64_t L = c.num_layers;
  at::Tensor ids = tokens.to(device());
  at::Tensor h = at::embedding(w.embed, ids).contiguous();  // [T, C] residual stream
  at::Tensor normed = at::empty_like(h);
  at::Tensor q = at::empty({T, c.num_heads, c.head_dim}, h.options());
  // cos[2l + kind][t]; NaN marks a skipped sublayer.
  at::Tensor cos;
  if (options.similarity)
    cos = at::full({2 * L, T}, std::numeric_limits<float>::quiet_NaN(), h.options().dtype(at::kFloat));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const double eps = c.rms_norm_eps;

  // Each sublayer's output is added to the residual stream and normalised with the *next* running
  // sublayer's norm in one fused op; that op also measures the similarity.
  struct Sublayer { int64_t layer; bool attention; };
  std::vector<Sublayer> order;
  for (int64_t l = 0; l < L; ++l) {
    if (plan.attention[l]) order.push_back({l, true});
    if (plan.mlp[l]) order.push_back({l, false});
  }
  auto norm_weight = [&](size_t i) -> const at::Tensor& {
    if (i >= order.size()) return w.final_norm;
    const LayerWeights& lw = w.layers[order[i].layer];
    return order[i].attention ? lw.attn_norm : lw.mlp_norm;
  };

  std::vector<double>* profile = options.sublayer_seconds;
  DOTF_CHECK_ARG(!profile || device().is_cpu(), "per-sublayer timing needs a CPU model");
  if (profile) profile->assign(2 * L + 1, std::numeric_limits<double>::quiet_NaN());
  using Clock = std::chrono::steady_clock;
  auto lap = [last = Clock::now()]() mutable {
    const auto now = Clock::now();
    const double seconds = std::chrono::duration<double>(now - last).count();
    last = now;
    return seconds;
  };
  add_rmsnorm_cossim(h, at::Tensor(), norm_weight(0), eps, normed, at::Tensor());
  double rest = profile ? lap() : 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    const auto [l, is_attention] = order[i];
    const LayerWeights& lw = w.layers[l];
    at::Tensor delta;
    if (is_attention) {
      at::Tensor qkv = lw.qkv(normed);
      at::Tensor k_slab = cache.keys(l), v_slab = cache.values(l);
      rope_qkv_to_cache(qkv, rope_cos_, rope_sin_, kernel_start, c.num_heads, c.num_kv_heads, q, k_slab, v_slab,
                        options.device_start);
      cache.write_int8_mirror(l, kernel_start, T, options.device_start);  // no-op without a mirror
      delta = lw.o(options.int8_kv ? int8_attention_with_cache(q, cache.int8_keys(l), cache.int8_values(l),
                                                               cache.key_scales(l), cache.value_scales(l),
                                                               kernel_start, scale, options.attention_window,
                                                               options.device_start)
                                   : attention_with_cache(q, k_slab, v_slab, kernel_start, scale,
                                                          options.device_start, options.attention_window));
    } else {
      delta = lw.down(silu_mul(lw.gate_up(normed)));
    }
    at::Tensor cos_row = options.similarity ? cos[2 * l + (is_attention ? 0 : 1)] : at::Tensor();
    add_rmsnorm_cossim(h, delta.contiguous(), norm_weight(i + 1), eps, normed, cos_row);
    if (profile) (*profile)[2 * l + (is_attention ? 0 : 1)] = lap();
    if (options.after_layer && (i + 1 == order.size() || order[i + 1].layer != l)) (*options.after_layer)(l);
  }

  // The screen is of the model's own head: a forward over other weights computes every logit.
  const LinearScreen* screen = options.logits_top_k > 0 && !override_weights ? options.lm_head_screen : nullptr;
  DOTF_CHECK_ARG(!screen || screen->layer().weight().is_same(weights_.lm_head.weight()),
                 "forward: the LM-head screen given is not of this model's head");
  auto head = [&](const at::Tensor& x) { return screen ? screen->top_k(x, options.logits_top_k) : w.lm_head(x); };
  ForwardOutput out;
  if (options.logits == LogitsFor::All) out.logits = head(normed);
  if (options.logits == LogitsFor::Last) out.logits = head(normed.narrow(0, T - 1, 1));
  if (profile) (*profile)[2 * L] = rest + lap();
  if (options.similarity) {
    out.similarity = cos.mean(1).view({L, 2});
    out.last_similarity = cos.select(1, T - 1).view({L, 2}).clone();
  }
  return out;
}

}  // namespace dotf
