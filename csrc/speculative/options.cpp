#include "speculative/options.h"

#include <cmath>
#include <limits>

namespace dotf {

GenerateOptions preset(Strategy strategy, c10::DeviceType device) {
  GenerateOptions o;  // the member initialisers: the paper's method
  if (strategy != Strategy::DOTF) return o;
  // dotf (bench/README.md, "Choosing the defaults", measured on the tuning prompts): lookup drafts after
  // every draft token and a fallback to plain steps where speculation loses.
  o.lookup = true;
  o.lookup_every_step = true;
  o.break_even = true;
  if (device == c10::DeviceType::CUDA) return o;  // the int8 draft's kernels are CPU ones: asd's own-weights draft
  // The int8 self-draft agrees with the full model on ~98% of tokens: it needs no skipped sublayer
  // (threshold 1), a low exit threshold (a 0.6 top-1 probability ended most rounds early), and rounds of
  // at most 8 (verifying more costs more than it wins on a CPU).
  o.draft = DraftWeights::Int8;
  // draft_kv "auto": the exact cache while its rows are a small share of a draft step's bytes, the int8
  // mirror (and a window) once they are not (speculative/policies/draft_kv.h; bench/README.md, "Long contexts").
  o.draft_kv = DraftKV::Auto;
  o.selection.threshold = 1.0;
  o.gamma = 0.2;
  o.max_draft = 8;
  return o;
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A closed, open or half-open interval; NaN is in none.
struct Range {
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;
  bool finite = false;  // also refuse +-inf (for half-infinite ranges)

  bool contains(double v) const {
    if (finite && !std::isfinite(v)) return false;
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  // For the option table: "[-1, 1]", ">= 1", ">= 0, finite".
  std::string display() const {
    if (hi == kInf) return detail::concat(lo_open ? "> " : ">= ", lo, finite ? ", finite" : "");
    return detail::concat(lo_open ? "(" : "[", lo, ", ", hi, hi_open ? ")" : "]");
  }
  // For messages: "<name> must be <describe()>".
  std::string describe() const {
    if (hi == kInf) return detail::concat(finite ? "a finite number " : "", lo_open ? "> " : ">= ", lo);
    return detail::concat("in ", lo_open ? "(" : "[", lo, ", ", hi, hi_open ? ")" : "]");
  }
};

Range at_least(double lo) { return Range{lo}; }
Range closed(double lo, double hi) { return Range{lo, hi}; }

// Field accessor usable on const and non-const options: DOTF_FIELD(selection.threshold).
#define DOTF_FIELD(member) [](auto& o) -> auto& { return o.member; }

template <typename T, typename Field>
OptionInfo number_option(const char* name, Field field, Range range, OptionScope scope, const char* doc) {
  const OptionType type = std::is_same_v<T, double> ? OptionType::Float : OptionType::Int;
  return OptionInfo{
      name, type, {}, range.display(), scope, doc,
      [field](const GenerateOptions& o) { return OptionValue(static_cast<T>(field(o))); },
      [name = std::string(name), range](const OptionValue& v) {
        if (!range.contains(static_cast<double>(std::get<T>(v))))
          throw ValueError(detail::concat(name, " must be ", range.describe(), ", got ", std::get<T>(v)));
      },
      [field](GenerateOptions& o, const OptionValue& v) { field(o) = std::get<T>(v); }};
}

template <typename Field>
OptionInfo bool_option(const char* name, Field field, OptionScope scope, const char* doc) {
  return OptionInfo{name, OptionType::Bool, {}, "", scope, doc,
                    [field](const GenerateOptions& o) { return OptionValue(field(o)); },
                    [](const OptionValue&) {},
                    [field](GenerateOptions& o, const OptionValue& v) { field(o) = std::get<bool>(v); }};
}

template <typename Enum, typename Field>
OptionInfo choice_option(const char* name, Field field, OptionScope scope, const char* doc) {
  return OptionInfo{name, OptionType::Choice, names_of<Enum>(), "", scope, doc,
                    [field](const GenerateOptions& o) { return OptionValue(std::string(name_of(field(o)))); },
                    [](const OptionValue& v) { parse_name<Enum>(std::get<std::string>(v)); },
                    [field](GenerateOptions& o, const OptionValue& v) {
                      field(o) = parse_name<Enum>(std::get<std::string>(v));
                    }};
}

std::vector<OptionInfo> build_table() {
  constexpr OptionScope spec = OptionScope::Speculative, any = OptionScope::Any, sampling = OptionScope::Sampling;
  return {
      number_option<double>("threshold", DOTF_FIELD(selection.threshold), closed(-1, 1), spec,
                            "tau: attention sublayers whose prefill similarity is >= tau are dropped from the draft"),
      number_option<double>("budget", DOTF_FIELD(selection.budget), closed(0, 1), spec,
                            "rho: at most floor(rho * layers) attention sublayers are dropped (1: no budget)"),
      number_option<int64_t>("keep_first", DOTF_FIELD(selection.keep_first), at_least(0), spec,
                             "never drop the attention of the first k layers (0: no such rule)"),
      choice_option<SimilarityAggregate>("similarity", DOTF_FIELD(similarity), spec,
                                         "aggregate the prefill similarity over all positions or take the last"),
      number_option<int64_t>("max_draft", DOTF_FIELD(max_draft), at_least(1), spec,
                             "K_max: the most tokens drafted per round"),
      bool_option("cost_draft_length", DOTF_FIELD(cost_draft_length), spec,
                  "cap each round at the draft length that the measured draft-step and verify-row costs predict "
                  "fastest, at most max_draft (greedy calls, as break_even: under sampling a length chosen by "
                  "the clock would make a seeded call unreproducible)"),
      number_option<double>("gamma", DOTF_FIELD(gamma), Range{0, 1, true, true}, spec,
                            "initial draft-exit threshold on the draft's top-1 probability"),
      choice_option<DraftExit>("draft_exit", DOTF_FIELD(draft_exit), spec,
                               "stop drafting on a low top-1 probability (the paper) or top-two logit margin"),
      number_option<double>("margin", DOTF_FIELD(margin), Range{0, kInf, false, false, true}, spec,
                            "initial draft-exit threshold on the top-1 minus runner-up logit (draft_exit='margin')"),
      number_option<double>("alpha", DOTF_FIELD(alpha), Range{0, 1, true, false}, spec,
                            "acceptance target of the adaptive exit rule (Draft & Verify)"),
      bool_option("adaptive_gamma", DOTF_FIELD(adaptive_gamma), spec,
                  "adapt the exit threshold after every round (False: it stays at its initial value)"),
      bool_option("carry_gamma", DOTF_FIELD(carry_gamma), spec,
                  "start from the threshold the previous call ended with (needs adaptive_gamma)"),
      choice_option<DraftWeights>("draft", DOTF_FIELD(draft), spec,
                                  "draft weights: the model's own or an int8 copy derived at first use (CPU)"),
      choice_option<DraftKV>("draft_kv", DOTF_FIELD(draft_kv), spec,
                             "KV rows the draft's attention reads: the exact cache, an int8 mirror of it (about a "
                             "quarter of the fp32 bytes, kept beside the cache), or auto: the mirror once the exact "
                             "rows a draft step reads outweigh 15% of its weight bytes, and a 1024-key draft_window "
                             "once the mirror's rows outweigh 25% (CPU; on CUDA auto is 'same')"),
      number_option<int64_t>("draft_window", DOTF_FIELD(draft_window), at_least(0), spec,
                             "the draft's attention sees the first 4 keys and its last N keys (0: every key; on CUDA "
                             "with draft_kv='int8'): a draft step that stops growing with the context; the full "
                             "model sees every key"),
      bool_option("lookup", DOTF_FIELD(lookup), spec, "n-gram lookup drafts from the prompt and the output"),
      bool_option("lookup_every_step", DOTF_FIELD(lookup_every_step), spec,
                  "look up again after every model draft token, not only at the start of a round"),
      bool_option("lookup_check", DOTF_FIELD(lookup_check), spec,
                  "the draft model checks lookup proposals in its next pass and drafts on after them (False: "
                  "they go to the verify unchecked and end the round's drafting, which saves the draft's rows "
                  "where each costs about a verify row: long contexts without a draft_window)"),
      number_option<int64_t>("lookup_max_tokens", DOTF_FIELD(lookup_options.max_tokens), at_least(1), spec,
                             "tokens proposed per lookup"),
      number_option<int64_t>("lookup_max_ngram", DOTF_FIELD(lookup_options.max_ngram), at_least(1), spec,
                             "longest suffix n-gram looked up"),
      number_option<int64_t>("lookup_min_ngram", DOTF_FIELD(lookup_options.min_ngram), at_least(1), spec,
                             "shortest suffix n-gram looked up"),
      bool_option("break_even", DOTF_FIELD(break_even), spec,
                  "decode plainly while speculation is measured slower than plain steps (greedy calls: under "
                  "sampling a path chosen by the clock would make a seeded call unreproducible)"),
      number_option<int64_t>("reselect_every", DOTF_FIELD(reselect_every), at_least(0), spec,
                             "re-select the draft plan from verify-pass similarities every N rounds (0: never)"),
      choice_option<SelectionRule>("selection", DOTF_FIELD(rule), spec,
                                   "choose the plan by the similarity threshold (the paper) or dotf's cost model"),
      number_option<double>("sensitivity", DOTF_FIELD(sensitivity), at_least(0), spec,
                            "cost model: acceptance falls as exp(-sensitivity * sum(1 - s)) over skipped sublayers"),
      number_option<int64_t>("cost_warmup_rounds", DOTF_FIELD(cost_warmup_rounds), at_least(1), spec,
                             "cost model: rounds drafted with nothing skipped before the first choice"),
      number_option<int64_t>("max_new_tokens", DOTF_FIELD(max_new_tokens), at_least(1), any,
                             "the most tokens generated (fewer when an EOS token comes first)"),
      bool_option("do_sample", DOTF_FIELD(do_sample), any,
                  "sample from the warped distribution instead of taking the most likely token"),
      number_option<double>("temperature", DOTF_FIELD(temperature), Range{0, kInf, true, false, true}, sampling,
                            "divide the logits by this before the other warpers"),
      number_option<int64_t>("top_k", DOTF_FIELD(top_k), at_least(0), sampling,
                             "keep the k most likely tokens (0: off)"),
      number_option<double>("top_p", DOTF_FIELD(top_p), Range{0, 1, true, false}, sampling,
                            "keep the most likely tokens until their probability mass reaches top_p (1: off)"),
      number_option<double>("min_p", DOTF_FIELD(min_p), Range{0, 1, false, true}, sampling,
                            "drop tokens less likely than min_p times the most likely one (0: off)"),
      bool_option("cuda_graphs", DOTF_FIELD(cuda_graphs), any,
                  "on a CUDA model, replay decode, draft and verify steps from captured CUDA graphs"),
      bool_option("lm_head_screen", DOTF_FIELD(lm_head_screen), any,
                  "greedy and top-k passes of the full model compute in fp32 only the logits that an int8 copy of "
                  "the LM head, with a rigorous error bound, cannot rule out of the k largest: the same tokens "
                  "(CPU fp32/bf16 heads on AVX2)"),
  };
}

#undef DOTF_FIELD

}  // namespace

const std::vector<OptionInfo>& option_table() {
  static const std::vector<OptionInfo> table = build_table();
  return table;
}

const OptionInfo& find_option(std::string_view name) {
  for (const OptionInfo& info : option_table())
    if (info.name == name) return info;
  std::string known;
  for (const OptionInfo& info : option_table()) known += (known.empty() ? "" : ", ") + info.name;
  throw TypeError(detail::concat("unknown option '", name, "'; known: ", known));
}

void set_option(GenerateOptions& options, std::string_view name, const OptionValue& value) {
  const OptionInfo& info = find_option(name);
  info.check(value);
  info.assign(options, value);
}

void check_given_options(const GenerateOptions& o, const std::vector<std::string>& given) {
  if (o.do_sample) return;
  for (const std::string& name : given)
    DOTF_CHECK_ARG(find_option(name).scope != OptionScope::Sampling, name,
                   " needs do_sample=True (greedy decoding takes the most likely token and would ignore it)");
}

void validate(const GenerateOptions& o, Strategy strategy) {
  for (const OptionInfo& info : option_table()) info.check(info.get(o));
  DOTF_CHECK_ARG(o.lookup_options.min_ngram <= o.lookup_options.max_ngram, "lookup_min_ngram (",
                 o.lookup_options.min_ngram, ") must be <= lookup_max_ngram (", o.lookup_options.max_ngram, ")");
  // The cost rule chooses plans by measured time: under sampling a seeded call would not be reproducible.
  if (strategy != Strategy::AR)
    DOTF_CHECK_ARG(!(o.do_sample && o.rule == SelectionRule::Cost),
                   "selection='cost' chooses the draft by measured time, so with do_sample=True a seed would not "
                   "reproduce a call; use selection='threshold'");
  // A fixed threshold neither reads nor overwrites the carried one, so it cannot honour carry_gamma.
  if (strategy != Strategy::AR)
    DOTF_CHECK_ARG(o.adaptive_gamma || !o.carry_gamma,
                   "carry_gamma=True needs adaptive_gamma=True (a fixed gamma has nothing to carry)");
}

}  // namespace dotf
