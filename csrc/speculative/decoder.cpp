#include "speculative/decoder.h"

#include "core/check.h"
#include "ops/accept.h"
#include "ops/sampling.h"

#include <ATen/ops/cat.h>
#include <ATen/TensorOperators.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

namespace dotf {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool is_eos(const DecodeOptions& options, int64_t token) {
  return std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end();
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
      if (is_eos(options_, token)) result_.stats.stop_reason = "eos";
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

// The caller's graphs, or an eager stand-in: one code path for both.
class Steps {
 public:
  Steps(const Transformer& model, GraphedForward* graphs)
      : own_(graphs ? nullptr : std::make_unique<GraphedForward>(model, GraphOptions{false})),
        graphs_(graphs ? graphs : own_.get()) {}
  GraphedForward* operator->() { return graphs_; }

 private:
  std::unique_ptr<GraphedForward> own_;
  GraphedForward* graphs_;
};

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

std::string to_string(DraftExit exit) { return exit == DraftExit::Margin ? "margin" : "probability"; }

DraftExit draft_exit_from_string(const std::string& name) {
  if (name == "probability") return DraftExit::Probability;
  if (name == "margin") return DraftExit::Margin;
  throw ValueError("draft_exit must be 'probability' or 'margin', got '" + name + "'");
}

void validate_exit_threshold(DraftExit exit, double threshold) {
  if (exit == DraftExit::Probability)
    DOTF_CHECK_ARG(threshold > 0.0 && threshold < 1.0, "gamma must be in (0, 1), got ", threshold);
  else
    DOTF_CHECK_ARG(threshold >= 0.0 && std::isfinite(threshold), "margin must be a finite number >= 0, got ",
                   threshold);
}

void validate(const SpecOptions& o, const AdaptiveGamma& g, int64_t num_layers) {
  validate(o.selection);
  DOTF_CHECK_ARG(o.max_draft >= 1, "max_draft must be >= 1, got ", o.max_draft);
  validate_exit_threshold(o.draft_exit, g.gamma);
  DOTF_CHECK_ARG(g.alpha > 0.0 && g.alpha <= 1.0, "alpha must be in (0, 1], got ", g.alpha);
  if (o.plan) o.plan->validate(num_layers);
  DOTF_CHECK_ARG(o.reselect_every >= 0, "reselect_every must be >= 0, got ", o.reselect_every);
  DOTF_CHECK_ARG(o.sensitivity >= 0, "sensitivity must be >= 0, got ", o.sensitivity);
  DOTF_CHECK_ARG(o.cost_warmup_rounds >= 1, "cost_warmup_rounds must be >= 1, got ", o.cost_warmup_rounds);
  DOTF_CHECK_ARG(o.lookup_options.min_ngram >= 1 && o.lookup_options.max_ngram >= o.lookup_options.min_ngram,
                 "lookup n-gram sizes must satisfy 1 <= min_ngram <= max_ngram");
  DOTF_CHECK_ARG(o.lookup_options.max_tokens >= 1, "lookup_max_tokens must be >= 1, got ", o.lookup_options.max_tokens);
}

DecodeResult decode_ar(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                       const DecodeOptions& options, GraphedForward* graphs) {
  validate(options, model.config().vocab_size);
  check_prompt(model, prompt, cache, options.max_new_tokens);
  const auto t0 = Clock::now();
  DecodeResult result;
  result.stats.strategy = "ar";
  result.stats.prompt_tokens = prompt.size(0);
  Emitter emitter(options, result);
  const LayerPlan full = LayerPlan::full(model.config().num_layers);
  Steps steps(model, graphs);

  ForwardOutput out;
  std::vector<int64_t> next = prefill(model, prompt, cache, false, out);
  result.stats.prefill_seconds = seconds_since(t0);
  while (!emitter.emit(next)) {
    emitter.check_interrupt();
    out = steps->forward(next, cache.length(), cache, full, ForwardOptions{LogitsFor::Last, false});
    next = greedy_ids(out.logits);
  }
  result.stats.new_tokens = static_cast<int64_t>(result.tokens.size());
  result.stats.seconds = seconds_since(t0);
  return result;
}

namespace {

enum Source { kModel = 0, kLookup = 1 };

// Per-call state of the speculative loop, so that each step reads as what it does.
class SpeculativeLoop {
 public:
  SpeculativeLoop(const Transformer& model, const at::Tensor& prompt, KVCache& cache, const DecodeOptions& options,
                  const SpecOptions& spec, AdaptiveGamma& gamma, DecodeResult& result, GraphedForward* graphs)
      : model_(model), cache_(cache), options_(options), spec_(spec), gamma_(gamma), result_(result),
        st_(result.stats), emitter_(options, result), full_(LayerPlan::full(model.config().num_layers)),
        steps_(model, graphs) {
    at::Tensor p = prompt.contiguous();
    history_.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  }

  void run(const at::Tensor& prompt) {
    const auto t0 = Clock::now();
    ForwardOutput out;
    std::vector<int64_t> next = prefill(model_, prompt, cache_, true, out);
    st_.prefill_seconds = seconds_since(t0);
    choose_plan(out);
    if (spec_.break_even) break_even_.start();
    bool finished = emit(next);
    while (!finished) {
      emitter_.check_interrupt();
      finished = step(next);
    }
    st_.fallback_switches = break_even_.switches();
  }

 private:
  void choose_plan(const ForwardOutput& prefill_out) {
    const auto t = Clock::now();
    const at::Tensor& similarity = spec_.use_last_position ? prefill_out.last_similarity : prefill_out.similarity;
    st_.attention_similarity = column(similarity, 0);
    st_.mlp_similarity = column(similarity, 1);
    if (spec_.plan) {
      set_plan(*spec_.plan);
    } else if (cost_rule()) {
      // Warm-up rounds draft with nothing skipped: they measure the acceptance the model starts from.
      cost_.attention_similarity = st_.attention_similarity;
      cost_.mlp_similarity = st_.mlp_similarity;
      set_plan(full_);
    } else {
      set_plan(select_draft_plan(st_.attention_similarity, spec_.selection));
    }
    st_.selection_seconds = seconds_since(t);
  }

  bool cost_rule() const { return spec_.rule == SpecOptions::Rule::Cost && !spec_.plan; }

  void set_plan(const LayerPlan& plan) {
    plan_ = plan;
    st_.skipped_attention = plan.skipped_attention();
    st_.skipped_mlp = plan.skipped_mlp();
    // The model's own weights under a plan that skips nothing cost a full step per draft token: no win.
    // (The cost rule's warm-up and profiled steps draft with the full plan on purpose: they measure.)
    model_draft_ = spec_.draft_weights != nullptr || !plan.is_full() ||
                   (cost_rule() && (st_.cost_selections == 0 || profile_pending_));
    st_.plan_note = model_draft_ ? "" : "no sublayer selected for skipping: the model does not draft";
  }

  // One speculative round (or a plain step); returns true when generation is finished.
  bool step(std::vector<int64_t>& next) {
    const auto t_round = Clock::now();
    const int64_t n = cache_.length();  // position of next[0], the last emitted token
    const bool speculate = (model_draft_ || spec_.lookup) && (!spec_.break_even || break_even_.speculate());
    const int64_t max_k = speculate ? std::min(spec_.max_draft, emitter_.remaining() - 1) : 0;

    std::vector<int64_t> drafts;
    std::vector<Source> sources;
    if (max_k > 0 && spec_.lookup) {
      drafts = ngram_lookup(history_, max_k, spec_.lookup_options);
      sources.assign(drafts.size(), kLookup);
    }
    if (max_k > 0 && model_draft_) draft_with_model(next[0], n, max_k, drafts, sources);

    // Verify [last, d1..dk] at n..n+k with the full model; it rewrites every layer's KV there.
    const auto t_verify = Clock::now();
    std::vector<int64_t> input{next[0]};
    input.insert(input.end(), drafts.begin(), drafts.end());
    const bool measure = spec_.reselect_every > 0 && !drafts.empty();
    ForwardOutput v = steps_->forward(input, n, cache_, full_, ForwardOptions{LogitsFor::All, measure});
    const int64_t k = static_cast<int64_t>(drafts.size());
    // Accept on the device: one host read of (accepted, bonus) per round.
    const at::Tensor target = argmax_top1(v.logits, /*with_prob=*/false).first;
    const at::Tensor drafted = token_tensor(drafts).to(model_.device());
    const std::vector<int64_t> verdict = to_host(greedy_accept(drafted, target));
    const int64_t accepted = verdict[0], bonus = verdict[1];
    DOTF_CHECK(bonus >= 0, "the model produced non-finite logits (NaN or inf) while verifying; the weights or "
               "the dtype cannot represent this computation");
    cache_.truncate(n + accepted + 1);  // keep [last, d1..d_accepted]; the bonus token is not cached yet
    const double verify_seconds = seconds_since(t_verify);
    st_.verify_seconds += verify_seconds;

    std::vector<int64_t> chunk(drafts.begin(), drafts.begin() + accepted);
    chunk.push_back(bonus);
    const size_t before = result_.tokens.size();
    const bool finished = emit(chunk);
    const auto emitted = static_cast<int64_t>(result_.tokens.size() - before);
    next = {bonus};

    const double seconds = seconds_since(t_round);
    if (k == 0) {
      st_.plain_steps += 1;
      if (spec_.break_even) break_even_.record_plain(emitted, seconds);
      return finished;
    }
    record_round(drafts, sources, accepted, emitted);
    if (spec_.break_even) break_even_.record_speculative(emitted, seconds);
    if (cost_rule()) track_cost_rounds(verify_seconds);
    if (measure) maybe_reselect(v.similarity, k + 1);
    return finished;
  }

  // Draft with the draft model (its weights, the plan) until its confidence (spec_.draft_exit: top-1
  // probability or top-two logit margin) drops below gamma, max_k, or EOS. Lookup drafts, when
  // present, are first checked by the draft model in one pass over [last, l1..lm]: they are kept while
  // the draft model agrees, and the draft model's own token replaces the first one it disagrees with.
  // Wrong lookups thus cost one draft pass of 1 + m rows instead of a wasted verify, while right ones
  // come for the price of that pass. With lookup_every_step a lookup follows every model token too.
  void draft_with_model(int64_t last, int64_t n, int64_t max_k, std::vector<int64_t>& drafts,
                        std::vector<Source>& sources) {
    const auto t = Clock::now();
    std::vector<int64_t> feed{last};
    feed.insert(feed.end(), drafts.begin(), drafts.end());
    int64_t looked_up = static_cast<int64_t>(drafts.size());  // unchecked lookup drafts at the end of drafts
    int64_t pos = n;
    // A pass runs while lookup drafts wait for their check (even when they already fill max_k) or
    // there is room for another model token.
    while (looked_up > 0 || static_cast<int64_t>(drafts.size()) < max_k) {
      const LogitsFor rows = feed.size() > 1 ? LogitsFor::All : LogitsFor::Last;
      // A cost measurement wants a plain one-token draft step of every sublayer.
      const bool profile = profile_pending_ && feed.size() == 1 && plan_.is_full();
      ForwardOutput d = steps_->forward(feed, pos, cache_, plan_,
                                        ForwardOptions{rows, false, profile ? &profile_ : nullptr}, spec_.draft_weights);
      if (profile) profile_pending_ = false, profiled_ = true;
      const bool margin_exit = spec_.draft_exit == DraftExit::Margin;
      auto [ids_t, probs_t] = argmax_top1(d.logits, /*with_prob=*/!margin_exit);
      const std::vector<int64_t> ids = to_host(ids_t);
      const at::Tensor confidence = (margin_exit ? top1_margin(d.logits, ids_t) : probs_t).to(at::kCPU);
      // Row i predicts the token after feed[i]; rows before the last check the lookup drafts.
      int64_t row = 0;
      if (feed.size() > 1) {
        const int64_t first = static_cast<int64_t>(drafts.size()) - looked_up;  // == 0: feed = [last] + lookups
        while (row < looked_up && ids[row] == drafts[first + row]) ++row;
        if (row < looked_up) {  // disagreement: drop the rest of the lookup drafts
          drafts.resize(first + row);
          sources.resize(first + row);
        }
      }
      pos += row + 1;
      const int64_t token = ids[row];
      if (token < 0) break;  // a non-finite draft proposes nothing; the verify pass reports real trouble
      drafts.push_back(token);
      sources.push_back(kModel);
      if (confidence[row].item<float>() < gamma_.gamma || is_eos(options_, token)) break;
      feed = {token};
      looked_up = 0;
      // Mid-round lookup: the output plus this round's drafts may now continue an n-gram seen before;
      // its tokens ride in the next pass, which checks them as it drafts the token after `token`.
      const int64_t room = max_k - static_cast<int64_t>(drafts.size());
      if (spec_.lookup && spec_.lookup_every_step && room > 0) {
        std::vector<int64_t> context = history_;
        context.insert(context.end(), drafts.begin(), drafts.end());
        const std::vector<int64_t> more = ngram_lookup(context, room, spec_.lookup_options);
        looked_up = static_cast<int64_t>(more.size());
        drafts.insert(drafts.end(), more.begin(), more.end());
        sources.insert(sources.end(), more.size(), kLookup);
        feed.insert(feed.end(), more.begin(), more.end());
      }
    }
    if (static_cast<int64_t>(drafts.size()) > max_k) {  // the agreement pass can add one past max_k
      drafts.resize(max_k);
      sources.resize(max_k);
    }
    st_.draft_seconds += seconds_since(t);
  }

  void record_round(const std::vector<int64_t>& drafts, const std::vector<Source>& sources, int64_t accepted,
                    int64_t emitted) {
    const int64_t k = static_cast<int64_t>(drafts.size());
    st_.rounds += 1;
    st_.drafted += k;
    st_.accepted += accepted;
    st_.round_tokens += emitted;
    int64_t model_drafted = 0, model_accepted = 0;
    for (int64_t i = 0; i < k; ++i) {
      st_.drafted_at[i] += 1;
      st_.drafted_by_source[sources[i]] += 1;
      model_drafted += sources[i] == kModel;
      if (i < accepted) {
        st_.accepted_at[i] += 1;
        st_.accepted_by_source[sources[i]] += 1;
        model_accepted += sources[i] == kModel;
      }
    }
    // gamma governs the model draft only; lookup-only rounds carry no evidence about it.
    gamma_.update(model_accepted, model_drafted, k == spec_.max_draft);
    since_choice_.drafted += model_drafted;
    since_choice_.accepted += model_accepted;
  }

  // Online re-selection: the verify pass measured similarities over its k+1 positions (fused, no
  // extra pass); average them on the device and re-select every reselect_every rounds.
  void maybe_reselect(const at::Tensor& similarity, int64_t positions) {
    at::Tensor weighted = similarity * static_cast<double>(positions);
    recent_sum_ = recent_sum_.defined() ? recent_sum_ + weighted : weighted;
    recent_positions_ += positions;
    if (++rounds_since_select_ < spec_.reselect_every) return;
    const at::Tensor mean = recent_sum_ / static_cast<double>(recent_positions_);
    const std::vector<double> s = column(mean, 0);
    recent_sum_ = at::Tensor();
    recent_positions_ = 0;
    rounds_since_select_ = 0;
    if (cost_rule()) {  // new similarities; the next full-plan draft step re-measures the costs
      cost_.attention_similarity = s;
      cost_.mlp_similarity = column(mean, 1);
      reselect_pending_ = true;
      return;
    }
    LayerPlan plan = select_draft_plan(s, spec_.selection);
    if (plan.attention != plan_.attention) {
      set_plan(plan);
      st_.reselections += 1;
    }
  }

  // Cost rule: after the warm-up rounds (and at each re-selection) profile one draft step with nothing
  // skipped, then choose the plan the cost model predicts fastest. Only host timers and counters the
  // loop already keeps: no extra pass, no extra device sync.
  void track_cost_rounds(double verify_seconds) {
    since_choice_.rounds += 1;
    since_choice_.verify_seconds += verify_seconds;
    if (st_.predicted_acceptance >= 0 && since_choice_.drafted > 0) st_.plan_acceptance = since_choice_.acceptance(0);
    const bool due = (st_.cost_selections == 0 && since_choice_.rounds >= spec_.cost_warmup_rounds) || reselect_pending_;
    if (due && !profiled_ && !profile_pending_) {
      reselect_pending_ = false;
      profile_pending_ = true;
      plan_before_profile_ = plan_;
      set_plan(full_);  // one draft step of every sublayer, timed
      return;
    }
    if (profiled_) select_by_cost();
  }

  void select_by_cost() {
    const auto t = Clock::now();
    const int64_t L = model_.config().num_layers;
    CostModelInputs in;
    in.attention_similarity = cost_.attention_similarity;
    in.mlp_similarity = cost_.mlp_similarity;
    in.costs.attention.resize(L);
    in.costs.mlp.resize(L);
    for (int64_t l = 0; l < L; ++l) {
      in.costs.attention[l] = profile_[2 * l];
      in.costs.mlp[l] = profile_[2 * l + 1];
    }
    in.costs.rest = profile_[2 * L];
    // Acceptance with nothing skipped, backed out of what the plan in use achieved.
    const double measured = since_choice_.acceptance(/*if_none=*/0.9);
    const double factor = acceptance_factor(plan_before_profile_, in.attention_similarity, in.mlp_similarity,
                                            spec_.sensitivity);
    in.base_acceptance = std::min(1.0, measured / std::max(factor, 1e-6));
    in.verify_seconds = since_choice_.verify_seconds / static_cast<double>(since_choice_.rounds);
    in.max_draft = spec_.max_draft;
    in.keep_first = spec_.selection.keep_first;
    in.sensitivity = spec_.sensitivity;
    const CostAwareChoice choice = select_cost_aware(in);
    set_plan(choice.plan);
    st_.predicted_acceptance = choice.predicted_acceptance;
    st_.predicted_gain = choice.full_plan_tokens_per_second > 0
                             ? choice.predicted_tokens_per_second / choice.full_plan_tokens_per_second
                             : 1.0;
    st_.cost_selections += 1;
    profiled_ = false;
    since_choice_ = {};
    st_.selection_seconds += seconds_since(t);
  }

  bool emit(const std::vector<int64_t>& chunk) {
    const size_t before = result_.tokens.size();
    const bool finished = emitter_.emit(chunk);
    history_.insert(history_.end(), result_.tokens.begin() + before, result_.tokens.end());
    return finished;
  }

  const Transformer& model_;
  KVCache& cache_;
  const DecodeOptions& options_;
  const SpecOptions& spec_;
  AdaptiveGamma& gamma_;
  DecodeResult& result_;
  DecodeStats& st_;
  Emitter emitter_;
  const LayerPlan full_;
  Steps steps_;
  LayerPlan plan_;
  bool model_draft_ = false;
  std::vector<int64_t> history_;  // prompt + emitted tokens, for n-gram lookup
  BreakEven break_even_{spec_.break_even_options};
  at::Tensor recent_sum_;         // [L, 2] similarity summed over recent verify positions
  int64_t recent_positions_ = 0;
  int64_t rounds_since_select_ = 0;
  // Cost rule state.
  struct { std::vector<double> attention_similarity, mlp_similarity; } cost_;
  std::vector<double> profile_;  // [2L + 1] seconds of the profiled draft step
  bool profile_pending_ = false, profiled_ = false, reselect_pending_ = false;
  LayerPlan plan_before_profile_;
  struct SinceChoice {
    int64_t rounds = 0, drafted = 0, accepted = 0;  // the draft model's own tokens only
    double verify_seconds = 0;
    double acceptance(double if_none) const {
      return drafted > 0 ? static_cast<double>(accepted) / static_cast<double>(drafted) : if_none;
    }
  } since_choice_;
};

}  // namespace

DecodeResult decode_speculative(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                                const DecodeOptions& options, const SpecOptions& spec, AdaptiveGamma& gamma,
                                GraphedForward* graphs) {
  const int64_t L = model.config().num_layers;
  validate(options, model.config().vocab_size);
  validate(spec, gamma, L);
  check_prompt(model, prompt, cache, options.max_new_tokens);
  const auto t0 = Clock::now();
  DecodeResult result;
  DecodeStats& st = result.stats;
  st.strategy = "speculative";
  st.prompt_tokens = prompt.size(0);
  st.drafted_at.assign(spec.max_draft, 0);
  st.accepted_at.assign(spec.max_draft, 0);
  st.draft_exit = to_string(spec.draft_exit);
  st.initial_gamma = gamma.gamma;
  gamma.m = 0.0;  // Draft & Verify restarts the acceptance average each call; gamma itself may carry over
  SpeculativeLoop(model, prompt, cache, options, spec, gamma, result, graphs).run(prompt);
  st.final_gamma = gamma.gamma;
  st.new_tokens = static_cast<int64_t>(result.tokens.size());
  st.seconds = seconds_since(t0);
  return result;
}

}  // namespace dotf
