#include "speculative/loop.h"

#include "core/check.h"
#include "speculative/acceptance.h"
#include "speculative/lookup_drafter.h"
#include "speculative/model_drafter.h"
#include "speculative/output.h"
#include "speculative/policies/break_even.h"
#include "speculative/policies/draft_length.h"
#include "speculative/policies/plan_policy.h"

#include <chrono>
#include <memory>
#include <utility>

namespace dotf {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void check_call(const Transformer& model, const at::Tensor& prompt, const KVCache& cache, const GenerateRequest& r) {
  validate(r.options, r.strategy);
  const int64_t vocab = model.config().vocab_size;
  for (int64_t id : r.eos_token_ids)
    DOTF_CHECK_ARG(id >= 0 && id < vocab, "eos_token_id ", id, " is outside the vocabulary [0, ", vocab, ")");
  DOTF_CHECK_DIM(prompt, 1, "input_ids");
  DOTF_CHECK_DTYPE(prompt, at::kLong, "input_ids");
  DOTF_CHECK_ARG(prompt.size(0) > 0, "input_ids must not be empty");
  DOTF_CHECK_ARG(prompt.size(0) + r.options.max_new_tokens <= cache.capacity(), "prompt (", prompt.size(0),
                 " tokens) + ", r.options.max_new_tokens, " new tokens exceed the cache capacity ", cache.capacity());
}

// The full model's passes whose logits the rule reads (choose, accept): through the screen when there is one.
ForwardOptions full_pass(LogitsFor logits, bool similarity, const GenerateOptions& o, const LinearScreen* screen) {
  return ForwardOptions{.logits = logits, .similarity = similarity, .lm_head_screen = screen,
                        .logits_top_k = screen ? logits_read(o) : 0};
}

// The prompt's pass: a full pass that reports progress and honours interrupts between layers (a long
// prompt's prefill is the one pass that takes long enough to need both).
ForwardOutput prefill_pass(const Transformer& model, const at::Tensor& prompt, KVCache& cache, const LayerPlan& full,
                      ForwardOptions options, const GenerateRequest& r) {
  const int64_t layers = model.config().num_layers;
  const std::function<void(int64_t)> after_layer = [&](int64_t layer) {
    if (r.check_interrupt) r.check_interrupt();
    if (r.on_prefill_progress) r.on_prefill_progress(layer + 1, layers);
  };
  if (r.check_interrupt || r.on_prefill_progress) options.after_layer = &after_layer;
  return model.forward(prompt, 0, cache, full, options);
}

// The caller's graphs, or an eager stand-in: one code path for both.
class Steps {
 public:
  Steps(const Transformer& model, GraphedForward* graphs)
      : own_(graphs ? nullptr : std::make_unique<GraphedForward>(model, GraphOptions{false})),
        graphs_(graphs ? graphs : own_.get()) {}
  GraphedForward& operator*() { return *graphs_; }
  GraphedForward* operator->() { return graphs_; }

 private:
  std::unique_ptr<GraphedForward> own_;
  GraphedForward* graphs_;
};

}  // namespace

DecodeResult decode_ar(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                       const GenerateRequest& request, GraphedForward* graphs, const LinearScreen* lm_head_screen) {
  check_call(model, prompt, cache, request);
  const auto t0 = Clock::now();
  DecodeResult result;
  DecodeStats& st = result.stats;
  st.strategy = Strategy::AR;
  st.prompt_tokens = prompt.size(0);
  Output out(request, prompt, result.tokens, st);
  Steps steps(model, graphs);
  const std::unique_ptr<AcceptanceRule> rule = make_acceptance_rule(request.options, request.seed);
  const LayerPlan full = LayerPlan::full(model.config().num_layers);
  const ForwardOptions step = full_pass(LogitsFor::Last, false, request.options, lm_head_screen);

  ForwardOutput f = prefill_pass(model, prompt, cache, full, step, request);
  int64_t next = rule->choose(f.logits);
  st.time.prefill = seconds_since(t0);
  while (!out.emit({next})) {
    out.check_interrupt();
    f = steps->forward({next}, cache.length(), cache, full, step);
    next = rule->choose(f.logits);
  }
  st.new_tokens = out.emitted();
  st.time.total = seconds_since(t0);
  return result;
}

namespace {

// Per-call state of the speculative loop, so that each step reads as what it does.
class SpeculativeLoop {
 public:
  SpeculativeLoop(const Transformer& model, const at::Tensor& prompt, KVCache& cache, const GenerateRequest& request,
                  const ModelWeights* draft_weights, AdaptiveGamma& exit, DecodeResult& result, GraphedForward* graphs,
                  const LinearScreen* lm_head_screen)
      : model_(model), request_(request), cache_(cache), o_(request.options), exit_(exit), st_(result.stats),
        out_(request, prompt, result.tokens, result.stats), steps_(model, graphs),
        full_(LayerPlan::full(model.config().num_layers)), rule_(make_acceptance_rule(o_, request.seed)),
        lm_head_screen_(lm_head_screen),
        plan_(model, o_, request.plan, draft_weights != nullptr, st_.plan), lookup_(o_.lookup_options),
        model_drafter_(ModelDrafterParts{*steps_, cache, draft_weights, plan_, *rule_, exit, o_.draft_exit,
                                         request.eos_token_ids, o_.lookup ? &lookup_ : nullptr,
                                         o_.lookup_every_step, o_.lookup_check, o_.draft_kv == DraftKV::Int8,
                                         o_.draft_window}) {}

  void run(const at::Tensor& prompt) {
    const auto t0 = Clock::now();
    const ForwardOutput prefill =
        prefill_pass(model_, prompt, cache_, full_, full_pass(LogitsFor::Last, true, o_, lm_head_screen_), request_);
    const int64_t first = rule_->choose(prefill.logits);
    st_.time.prefill = seconds_since(t0);
    plan_.start(prefill);
    if (fallback_) break_even_.start();
    bool finished = out_.emit({first});
    while (!finished) {
      out_.check_interrupt();
      finished = round();
    }
    st_.fallback_switches = break_even_.switches();
    st_.time.selection = plan_.selection_seconds();
  }

 private:
  // The model drafter while the plan makes drafting pay (it consults the lookup drafter itself), else
  // the lookup drafter alone when lookups are on.
  Drafter* drafter() {
    if (plan_.model_drafts()) return &model_drafter_;
    return o_.lookup ? &lookup_ : nullptr;
  }

  // One round: propose -> verify -> accept -> roll back (a plain step when nothing is proposed).
  // Returns true when generation is finished.
  bool round() {
    const auto t_round = Clock::now();
    const int64_t n = cache_.length();  // position of the last emitted token
    Drafter* drafter = this->drafter();
    const bool speculate = drafter && (!fallback_ || break_even_.speculate());
    const int64_t cap = cost_length_ ? draft_length_.cap() : o_.max_draft;
    const int64_t max_k = speculate ? std::min(cap, out_.remaining() - 1) : 0;

    Proposal proposal;
    double draft_seconds = 0;
    if (max_k > 0) {
      const auto t = Clock::now();
      drafter->propose(DraftContext{out_.history(), n}, max_k, proposal);
      draft_seconds = seconds_since(t);
      st_.time.draft += draft_seconds;
    }
    const int64_t k = proposal.size();

    // Verify [last, d1..dk] at n..n+k with the full model; it rewrites every layer's KV there.
    const auto t_verify = Clock::now();
    std::vector<int64_t> input{out_.history().back()};
    input.insert(input.end(), proposal.tokens.begin(), proposal.tokens.end());
    const bool measure = plan_.measures_verify() && k > 0;
    const ForwardOutput v =
        steps_->forward(input, n, cache_, full_, full_pass(LogitsFor::All, measure, o_, lm_head_screen_));
    const Verdict verdict = rule_->accept(proposal, v.logits);
    cache_.truncate(n + verdict.accepted + 1);  // keep [last, d1..d_accepted]; `next` is not cached yet
    const double verify_seconds = seconds_since(t_verify);
    st_.time.verify += verify_seconds;

    std::vector<int64_t> chunk(proposal.tokens.begin(), proposal.tokens.begin() + verdict.accepted);
    chunk.push_back(verdict.next);
    const int64_t before = out_.emitted();
    const bool finished = out_.emit(chunk);
    const int64_t emitted = out_.emitted() - before;
    const double seconds = seconds_since(t_round);

    if (k == 0) {
      st_.rounds.plain_steps += 1;
      if (fallback_) break_even_.record_plain(emitted, seconds);
      if (cost_length_) draft_length_.record_plain(verify_seconds);
      return finished;
    }
    st_.rounds.draft_cap_sum += cap;
    const auto [model_drafted, model_accepted] = record_round(proposal, verdict, emitted, cap);
    if (fallback_) break_even_.record_speculative(emitted, seconds);
    if (cost_length_)
      draft_length_.record_round(draft_seconds, model_drafted, k, verdict.accepted, k + 1, verify_seconds);
    plan_.after_round(verify_seconds, model_drafted, model_accepted, measure ? v.similarity : at::Tensor(), k + 1);
    return finished;
  }

  // A round's statistics and the exit threshold's update (`cap`: the most the round could draft). Returns the
  // draft model's own (drafted, accepted): the exit governs the model draft only, so rounds of lookup drafts
  // alone carry no evidence.
  std::pair<int64_t, int64_t> record_round(const Proposal& proposal, const Verdict& verdict, int64_t emitted,
                                           int64_t cap) {
    const int64_t k = proposal.size(), accepted = verdict.accepted;
    RoundStats& r = st_.rounds;
    for (size_t i = 0; i < verdict.acceptance_probability.size(); ++i) {
      r.acceptance_probability_sum_at[i] += verdict.acceptance_probability[i];
      r.acceptance_tests_at[i] += 1;
    }
    r.rounds += 1;
    r.drafted += k;
    r.accepted += accepted;
    r.round_tokens += emitted;
    int64_t model_drafted = 0, model_accepted = 0;
    for (int64_t i = 0; i < k; ++i) {
      const DraftSource source = proposal.sources[i];
      const bool kept = i < accepted;
      r.drafted_at[i] += 1;
      r.accepted_at[i] += kept;
      st_.source(source).drafted += 1;
      st_.source(source).accepted += kept;
      model_drafted += source == DraftSource::Model;
      model_accepted += kept && source == DraftSource::Model;
    }
    exit_.update(model_accepted, model_drafted, k == cap);
    return {model_drafted, model_accepted};
  }

  const Transformer& model_;
  const GenerateRequest& request_;
  KVCache& cache_;
  const GenerateOptions& o_;
  AdaptiveGamma& exit_;
  DecodeStats& st_;
  Output out_;
  Steps steps_;
  const LayerPlan full_;
  std::unique_ptr<AcceptanceRule> rule_;
  const LinearScreen* lm_head_screen_;  // for the full model's passes (full_pass)
  PlanPolicy plan_;
  // The break-even fallback switches by the clock; under sampling a path that depends on the clock would
  // draw different tokens from the same seed, so it decides greedy calls only.
  const bool fallback_ = o_.break_even && !o_.do_sample;
  BreakEven break_even_;
  // The cost-aware draft length follows the clock too: greedy calls only, for the same reason.
  const bool cost_length_ = o_.cost_draft_length && !o_.do_sample;
  DraftLength draft_length_{o_.max_draft};
  LookupDrafter lookup_;
  ModelDrafter model_drafter_;
};

}  // namespace

DecodeResult decode_speculative(const Transformer& model, const at::Tensor& prompt, KVCache& cache,
                                const GenerateRequest& request, const ModelWeights* draft_weights, AdaptiveGamma& exit,
                                GraphedForward* graphs, const LinearScreen* lm_head_screen) {
  check_call(model, prompt, cache, request);
  if (request.plan) request.plan->validate(model.config().num_layers);
  validate_exit_threshold(request.options.draft_exit, exit.gamma);  // the initial one, or one carried over
  find_option("alpha").check(exit.alpha);
  const auto t0 = Clock::now();
  DecodeResult result;
  DecodeStats& st = result.stats;
  st.strategy = request.strategy;
  st.prompt_tokens = prompt.size(0);
  st.rounds.drafted_at.assign(request.options.max_draft, 0);
  st.rounds.accepted_at.assign(request.options.max_draft, 0);
  st.rounds.acceptance_probability_sum_at.assign(request.options.max_draft, 0.0);
  st.rounds.acceptance_tests_at.assign(request.options.max_draft, 0);
  st.exit = ExitStats{request.options.draft_exit, exit.gamma, exit.gamma};
  exit.m = 0.0;  // Draft & Verify restarts the acceptance average each call; gamma itself may carry over
  DOTF_CHECK_ARG(request.options.draft_kv != DraftKV::Auto,
                 "draft_kv='auto' is resolved per call by Engine::generate, before the loop");
  st.draft_kv = request.options.draft_kv;
  st.draft_window = request.options.draft_window;
  if (request.options.draft_kv == DraftKV::Int8)
    cache.add_int8_mirror();  // the prefill below writes it; rows a given cache already holds are quantized now
  DOTF_CHECK_ARG(request.options.draft_window == 0 || model.device().is_cpu() ||
                     request.options.draft_kv == DraftKV::Int8,
                 "draft_window on ", model.device(), " needs draft_kv='int8' (the CUDA kernel of the exact cache "
                 "attends every key; the int8 mirror's takes the window)");
  SpeculativeLoop(model, prompt, cache, request, draft_weights, exit, result, graphs, lm_head_screen).run(prompt);
  st.exit.final = exit.gamma;
  st.new_tokens = static_cast<int64_t>(result.tokens.size());
  st.time.total = seconds_since(t0);
  return result;
}

}  // namespace dotf
