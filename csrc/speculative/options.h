#pragma once
// Every generate option, defined once. GenerateOptions holds the values (its member initialisers are
// the defaults of the paper's method, "asd"); option_table() gives each option's name, type, valid
// range and one-line doc and reads/writes it by name; preset() gives the defaults of a strategy on a
// device. Python's defaults, checks and error messages, the bindings' conversion, `dotf.options()`
// and the README's option table all come from here.
#include "core/names.h"

#include <c10/core/DeviceType.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace dotf {

// "ar": plain decoding. "asd": the paper (cosine-similarity draft, adaptive exit). "dotf": ours, on top of
// asd: a quantized self-draft, n-gram lookup drafts, break-even fallback (README, "What the paper does
// and what dotf does").
enum class Strategy { AR, ASD, DOTF };
// The draft's linear weights: the model's own, or an int8 copy derived from them (CPU).
enum class DraftWeights { Same, Int8 };
// The KV rows the model draft's attention reads: the exact cache, or an int8 mirror of it (CPU) that
// reads a quarter of the fp32 bytes per draft step (cache/kv_cache.h, ops/attention_int8.h).
enum class DraftKV { Same, Int8, Auto };
// When the model draft stops (after the token that trips it): its top-1 probability < gamma (the
// paper's rule, Draft & Verify's), or its top-1 logit minus the runner-up < margin (dotf's rule for a
// quantized self-draft, which disagrees with the full model only where rounding swaps its top two).
enum class DraftExit { Probability, Margin };
// How the draft plan is chosen: the paper's similarity threshold, or dotf's cost model.
enum class SelectionRule { Threshold, Cost };
// Which prefill positions the per-layer similarity aggregates: the mean over all, or the last.
enum class SimilarityAggregate { Mean, Last };

template <> struct EnumNames<Strategy> {
  static constexpr const char* what = "strategy";
  static constexpr std::pair<Strategy, const char*> entries[] = {
      {Strategy::AR, "ar"}, {Strategy::ASD, "asd"}, {Strategy::DOTF, "dotf"}};
};
template <> struct EnumNames<DraftWeights> {
  static constexpr const char* what = "draft";
  static constexpr std::pair<DraftWeights, const char*> entries[] = {{DraftWeights::Same, "same"},
                                                                      {DraftWeights::Int8, "int8"}};
};
template <> struct EnumNames<DraftKV> {
  static constexpr const char* what = "draft_kv";
  static constexpr std::pair<DraftKV, const char*> entries[] = {{DraftKV::Same, "same"}, {DraftKV::Int8, "int8"},
                                                                  {DraftKV::Auto, "auto"}};
};
template <> struct EnumNames<DraftExit> {
  static constexpr const char* what = "draft_exit";
  static constexpr std::pair<DraftExit, const char*> entries[] = {{DraftExit::Probability, "probability"},
                                                                   {DraftExit::Margin, "margin"}};
};
template <> struct EnumNames<SelectionRule> {
  static constexpr const char* what = "selection";
  static constexpr std::pair<SelectionRule, const char*> entries[] = {{SelectionRule::Threshold, "threshold"},
                                                                       {SelectionRule::Cost, "cost"}};
};
template <> struct EnumNames<SimilarityAggregate> {
  static constexpr const char* what = "similarity";
  static constexpr std::pair<SimilarityAggregate, const char*> entries[] = {{SimilarityAggregate::Mean, "mean"},
                                                                             {SimilarityAggregate::Last, "last"}};
};

// The strategy generate() runs when the caller names none.
inline constexpr Strategy kDefaultStrategy = Strategy::DOTF;

// The paper's threshold rule and dotf's two structural rules (speculative/selection.h).
struct SelectionOptions {
  double threshold = 0.99;  // tau: attention sublayers with similarity >= tau are dropped
  double budget = 0.5;      // rho: at most floor(rho * L) attention sublayers are dropped
  int64_t keep_first = 1;   // never drop the attention of the first k layers
};

// n-gram lookup drafts (speculative/lookup_drafter.h).
struct LookupOptions {
  int64_t max_ngram = 3;  // try the longest suffix first
  int64_t min_ngram = 2;  // shorter matches are too often coincidences to pay for their verify rows
  // Tokens proposed per lookup: the draft model checks m of them in one pass of 1 + m rows, and from 3
  // rows an int8 draft pass costs about rows / 3 + 0.3 one-row passes (compute-bound; SmolLM2, context
  // 304), so a long wrong guess costs more than a right one saves.
  int64_t max_tokens = 4;
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  // Sampling (transformers' names, defaults and order of warpers: temperature, top-k, top-p, min-p).
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;
  double top_p = 1.0;
  double min_p = 0.0;
  // Draft plan.
  SelectionOptions selection;
  SimilarityAggregate similarity = SimilarityAggregate::Mean;
  SelectionRule rule = SelectionRule::Threshold;
  double sensitivity = 10.0;       // cost model: acceptance falls as exp(-sensitivity * sum(1 - s))
  int64_t cost_warmup_rounds = 3;  // cost model: rounds with nothing skipped before the first choice
  int64_t reselect_every = 0;      // re-select the plan from verify-pass similarities every N rounds
  // The model draft and its exit.
  DraftWeights draft = DraftWeights::Same;
  DraftKV draft_kv = DraftKV::Same;  // Auto: chosen per call from byte counts (speculative/policies/draft_kv.h)
  // The draft's attention sees the first kAttentionSinks keys and its last draft_window keys
  // (ops/attention.h; on CUDA with draft_kv = Int8): a draft step whose cost stops growing with the
  // context. 0: every key.
  int64_t draft_window = 0;
  int64_t max_draft = 12;  // K_max
  // Cap each round at the draft length the measured draft and verify costs predict fastest
  // (speculative/policies/draft_length.h; greedy calls), at most max_draft.
  bool cost_draft_length = false;
  DraftExit draft_exit = DraftExit::Probability;
  double gamma = 0.6;   // initial threshold of the probability exit
  double margin = 0.1;  // initial threshold of the margin exit (logits)
  double alpha = 0.9;   // acceptance target of the adaptive rule
  bool adaptive_gamma = true;
  bool carry_gamma = false;
  // Lookup drafts, fallback, device.
  bool lookup = false;
  bool lookup_every_step = false;
  bool lookup_check = true;
  LookupOptions lookup_options;
  bool break_even = false;
  bool cuda_graphs = true;
  // Greedy and top-k passes of the full model compute only the LM head's logits that can be among the
  // k largest (ops/linear_screen.h, Engine::lm_head_screen; CPU heads on the AVX2 fp32/bf16 path): the
  // same tokens, faster.
  bool lm_head_screen = true;
};

// The defaults of a strategy on a device ("ar" reads only the options that are not speculative).
GenerateOptions preset(Strategy strategy, c10::DeviceType device);

enum class OptionType { Bool, Int, Float, Choice };
using OptionValue = std::variant<bool, int64_t, double, std::string>;

// Who reads an option: every call, the speculative strategies only ("ar" checks it and ignores it), or
// sampling calls only (giving one with do_sample=False is an error: greedy decoding would ignore it).
enum class OptionScope { Any, Speculative, Sampling };
template <> struct EnumNames<OptionScope> {
  static constexpr const char* what = "scope";
  static constexpr std::pair<OptionScope, const char*> entries[] = {
      {OptionScope::Any, "any"}, {OptionScope::Speculative, "speculative"}, {OptionScope::Sampling, "sampling"}};
};

struct OptionInfo {
  std::string name;
  OptionType type;
  std::vector<std::string> choices;  // Choice options: the accepted names
  std::string range;                 // e.g. "[-1, 1]", ">= 1"; empty for bools and choices
  OptionScope scope;
  std::string doc;
  std::function<OptionValue(const GenerateOptions&)> get;
  // Range check (ValueError naming the option); the value holds the alternative of `type`.
  std::function<void(const OptionValue&)> check;
  std::function<void(GenerateOptions&, const OptionValue&)> assign;  // unchecked
};

// Every option, in documentation order.
const std::vector<OptionInfo>& option_table();
// TypeError "unknown option '<name>'; known: ..." for a name the table does not hold.
const OptionInfo& find_option(std::string_view name);
// Checks the value's range, then assigns it.
void set_option(GenerateOptions& options, std::string_view name, const OptionValue& value);

// Every option's range, and the rules that tie options together (ValueError naming them).
void validate(const GenerateOptions& options, Strategy strategy);
// ValueError when a sampling-only option was given (`given`: the names the caller set) without do_sample.
void check_given_options(const GenerateOptions& options, const std::vector<std::string>& given);

}  // namespace dotf
