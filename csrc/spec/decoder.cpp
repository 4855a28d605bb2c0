#include "spec/decoder.h"

#include "common/check.h"
#include "ops/sampling.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/tensor.h>

#include <algorithm>
#include <chrono>

namespace dotf {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Hands tokens to the caller, honouring EOS and max_new_tokens exactly: nothing past either is kept.
class Emitter {
 public:
  Emitter(const DecodeOptions& options, DecodeResult& result) : options_(options), result_(result) {}

  // Returns true when generation is finished.
  bool emit(const std::vector<int64_t>& chunk) {
    std::vector<int64_t> kept;
    for (int64_t token : chunk) {
      if (done()) break;
      kept.push_back(token);
      result_.tokens.push_back(token);
      if (std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(), token) !=
          options_.eos_token_ids.end()) {
        result_.stats.stop_reason = "eos";
      }
    }
    if (result_.stats.stop_reason.empty() && remaining() == 0) result_.stats.stop_reason = "max_new_tokens";
    if (!kept.empty() && options_.on_tokens) options_.on_tokens(kept);
    return done();
  }
  bool done() const { return !result_.stats.stop_reason.empty(); }
  int64_t remaining() const { return options_.max_new_tokens - static_cast<int64_t>(result_.tokens.size()); }
  void check_interrupt() const {
    if (options_.check_interrupt) options_.check_interrupt();
  }

 private:
  const DecodeOptions& options_;
  DecodeResult& result_;
};

std::vector<int64_t> to_host(const at::Tensor& ids) {
  at::Tensor cpu = ids.to(at::kCPU).contiguous();
  return std::vector<int64_t>(cpu.data_ptr<int64_t>(), cpu.data_ptr<int64_t>() + cpu.numel());
}

// Greedy ids of the logits; non-finite logits are an error, never a silently chosen token.
std::vector<int64_t> greedy_ids(const at::Tensor& logits) {
  std::vector<int64_t> ids = to_host(argmax_top1(logits, /*with_prob=*/false).first);
  for (size_t i = 0; i < ids.size(); ++i)
    DOTF_CHECK(ids[i] >= 0, "the model produced non-finite logits (NaN or inf) at output row ", i,
               "; the weights or the dtype cannot represent this computation");
  return ids;
}

at::Tensor token_tensor(const std::vector<int64_t>& tokens) {
  return at::tensor(tokens, at::TensorOptions().dtype(at::kLong));
}

void check_prompt(const Transformer& model, const at::Tensor& prompt, const KVCache& cache, int64_t extra) {
  DOTF_CHECK_DIM(prompt, 1, "input_ids");
  DOTF_CHECK_DTYPE(prompt, at::kLong, "input_ids");
  DOTF_CHECK_ARG(prompt.size(0) > 0, "input_ids must not be empty");
  DOTF_CHECK_ARG(prompt.size(0) + extra <= cache.capacity(), "prompt (", prompt.size(0), " tokens) + ", extra,
                 " new tokens exceed the cache capacity ", cache.capacity());
}

// The prefill: the full model over the prompt, measuring similarities on the way.
std::vector<int64_t> prefill(const Transformer& model, const at::Tensor& prompt, KVCache& cache, bool similarity,
                             ForwardOutput& out) {
  out = model.forward(prompt, 0, cache, LayerPlan::full(model.config().num_layers),
                      ForwardOptions{LogitsFor::Last, similarity});
  return greedy_ids(out.logits);
}

std::vector<double> column(const at::Tensor& similarity, int64_t col) {
  at::Tensor c = similarity.select(1, col).to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace

void validate(const DecodeOptions& o, int64_t vocab_size) {
  DOTF_CHECK_ARG(o.max_new_tokens >= 1, "max_new_tokens must be >= 1, got ", o.max_new_tokens);
  for (int64_t id : o.eos_token_ids)
    DOTF_CHECK_ARG(id >= 0 && id < vocab_size, "eos_token_id ", id, " is outside the vocabulary [0, ", vocab_size, ")");
}

void validate(const SpecOptions& o, const AdaptiveGamma& g, int64_t num_layers) {
  validate(o.selection);
  DOTF_CHECK_ARG(o.max_draft >= 1, "max_draft must be >= 1, got ", o.max_draft);
  DOTF_CHECK_ARG(g.gamma > 0.0 && g.gamma < 1.0, "gamma must be in (0, 1), got ", g.gamma);
  DOTF_CHECK_ARG(g.alpha > 0.0 && g.alpha <= 1.0, "alpha must be in (0, 1], got ", g.alpha);
  if (o.plan) o.plan->validate(num_layers);
}

DecodeResult decode_ar(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                       const DecodeOptions& options) {
  validate(options, model.config().vocab_size);
  check_prompt(model, prompt, cache, options.max_new_tokens);
  const auto t0 = Clock::now();
  DecodeResult result;
  result.stats.strategy = "ar";
  result.stats.prompt_tokens = prompt.size(0);
  Emitter emitter(options, result);
  const LayerPlan full = LayerPlan::full(model.config().num_layers);

  ForwardOutput out;
  std::vector<int64_t> next = prefill(model, prompt, cache, false, out);
  result.stats.prefill_seconds = seconds_since(t0);
  while (!emitter.emit(next)) {
    emitter.check_interrupt();
    out = model.forward(token_tensor(next), cache.length(), cache, full, ForwardOptions{LogitsFor::Last, false});
    next = greedy_ids(out.logits);
  }
  result.stats.new_tokens = static_cast<int64_t>(result.tokens.size());
  result.stats.seconds = seconds_since(t0);
  return result;
}

DecodeResult decode_asd(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                        const DecodeOptions& options, const SpecOptions& spec, AdaptiveGamma& gamma) {
  const int64_t L = model.config().num_layers;
  validate(options, model.config().vocab_size);
  validate(spec, gamma, L);
  check_prompt(model, prompt, cache, options.max_new_tokens);
  const auto t0 = Clock::now();
  DecodeResult result;
  DecodeStats& st = result.stats;
  st.strategy = "asd";
  st.prompt_tokens = prompt.size(0);
  st.drafted_at.assign(spec.max_draft, 0);
  st.accepted_at.assign(spec.max_draft, 0);
  st.initial_gamma = gamma.gamma;
  gamma.m = 0.0;  // Draft & Verify restarts the acceptance average each call; gamma itself may carry over
  Emitter emitter(options, result);
  const LayerPlan full = LayerPlan::full(L);

  ForwardOutput out;
  std::vector<int64_t> next = prefill(model, prompt, cache, true, out);
  st.prefill_seconds = seconds_since(t0);

  const auto t_select = Clock::now();
  const at::Tensor& similarity = spec.use_last_position ? out.last_similarity : out.similarity;
  st.attention_similarity = column(similarity, 0);
  st.mlp_similarity = column(similarity, 1);
  const LayerPlan plan = spec.plan ? *spec.plan : select_draft_plan(st.attention_similarity, spec.selection);
  st.skipped_attention = plan.skipped_attention();
  st.skipped_mlp = plan.skipped_mlp();
  st.selection_seconds = seconds_since(t_select);
  // A draft that skips nothing costs a full step per token and cannot win: decode plainly.
  const bool speculate = !plan.is_full();
  if (!speculate) st.plan_note = "no sublayer selected for skipping; decoded without drafting";

  bool finished = emitter.emit(next);
  while (!finished) {
    emitter.check_interrupt();
    const int64_t n = cache.length();  // position of next[0], the last emitted token
    const int64_t max_k = speculate ? std::min(spec.max_draft, emitter.remaining() - 1) : 0;

    // Draft: one token at a time under the draft plan until confidence drops below gamma.
    const auto t_draft = Clock::now();
    std::vector<int64_t> drafts;
    int64_t token = next[0];
    while (static_cast<int64_t>(drafts.size()) < max_k) {
      const int64_t i = static_cast<int64_t>(drafts.size());
      ForwardOutput d = model.forward(token_tensor({token}), n + i, cache, plan, ForwardOptions{LogitsFor::Last, false});
      auto [ids, probs] = argmax_top1(d.logits, /*with_prob=*/true);
      token = ids.item<int64_t>();
      if (token < 0) break;  // a non-finite draft proposes nothing; the verify pass reports real trouble
      drafts.push_back(token);
      if (probs.item<float>() < gamma.gamma) break;
      if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end())
        break;
    }
    st.draft_seconds += seconds_since(t_draft);

    // Verify [last, d1..dk] at positions n..n+k with the full model; it rewrites every layer's KV there.
    const auto t_verify = Clock::now();
    std::vector<int64_t> input{next[0]};
    input.insert(input.end(), drafts.begin(), drafts.end());
    ForwardOutput v = model.forward(token_tensor(input), n, cache, full, ForwardOptions{LogitsFor::All, false});
    const std::vector<int64_t> target = greedy_ids(v.logits);
    const int64_t k = static_cast<int64_t>(drafts.size());
    int64_t accepted = 0;
    while (accepted < k && drafts[accepted] == target[accepted]) ++accepted;
    cache.truncate(n + accepted + 1);  // keep [last, d1..d_accepted]; the bonus token is not cached yet
    st.verify_seconds += seconds_since(t_verify);

    if (k > 0) {
      st.rounds += 1;
      st.drafted += k;
      st.accepted += accepted;
      for (int64_t i = 0; i < k; ++i) st.drafted_at[i] += 1;
      for (int64_t i = 0; i < accepted; ++i) st.accepted_at[i] += 1;
      gamma.update(accepted, k, k == spec.max_draft);
    }
    std::vector<int64_t> chunk(drafts.begin(), drafts.begin() + accepted);
    chunk.push_back(target[accepted]);
    const size_t before = result.tokens.size();
    finished = emitter.emit(chunk);
    if (k > 0) st.round_tokens += static_cast<int64_t>(result.tokens.size() - before);
    next = {target[accepted]};
  }
  st.final_gamma = gamma.gamma;
  st.new_tokens = static_cast<int64_t>(result.tokens.size());
  st.seconds = seconds_since(t0);
  return result;
}

}  // namespace dotf
