#include "python/convert.h"

#include <algorithm>
#include <cmath>

namespace py = pybind11;

namespace dotf {

namespace {

const char* type_name(py::handle value) { return Py_TYPE(value.ptr())->tp_name; }

// The Python value as the option's type: bools only for bools, ints (not bools) for ints, any real
// number (not a bool) for floats, str for choices.
OptionValue option_value(const OptionInfo& info, py::handle v) {
  const bool is_bool = PyBool_Check(v.ptr());
  switch (info.type) {
    case OptionType::Bool:
      DOTF_CHECK_TYPE(is_bool, info.name, " must be a bool, got ", type_name(v));
      return v.cast<bool>();
    case OptionType::Int:
      DOTF_CHECK_TYPE(!is_bool && PyIndex_Check(v.ptr()), info.name, " must be an int, got ", type_name(v));
      return py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr())).cast<int64_t>();
    case OptionType::Float: {
      const PyNumberMethods* n = Py_TYPE(v.ptr())->tp_as_number;
      DOTF_CHECK_TYPE(!is_bool && (PyIndex_Check(v.ptr()) || (n && n->nb_float)), info.name,
                      " must be a number, got ", type_name(v));
      const double x = PyFloat_AsDouble(v.ptr());
      if (x == -1.0 && PyErr_Occurred()) throw py::error_already_set();
      return x;
    }
    case OptionType::Choice:
      DOTF_CHECK_TYPE(PyUnicode_Check(v.ptr()), info.name, " must be a str, got ", type_name(v));
      return v.cast<std::string>();
  }
  return false;
}

py::object to_python(const OptionValue& v) {
  return std::visit([](const auto& x) -> py::object { return py::cast(x); }, v);
}

}  // namespace

void apply_options(GenerateRequest& request, const py::dict& options) {
  std::vector<std::string> given;
  for (auto [key, value] : options) {
    DOTF_CHECK_TYPE(PyUnicode_Check(key.ptr()), "option names must be str, got ", type_name(key));
    const OptionInfo& info = find_option(key.cast<std::string>());
    const OptionValue v = option_value(info, value);
    info.check(v);
    info.assign(request.options, v);
    given.push_back(info.name);
  }
  check_given_options(request.options, given);
}

py::list option_table_to_python() {
  py::list out;
  for (const OptionInfo& info : option_table()) {
    py::dict defaults;
    for (const auto& [device, device_name] : {std::pair{c10::DeviceType::CPU, "cpu"}, {c10::DeviceType::CUDA, "cuda"}}) {
      py::dict per_strategy;
      for (const auto& [strategy, name] : EnumNames<Strategy>::entries)
        per_strategy[name] = to_python(info.get(preset(strategy, device)));
      defaults[device_name] = per_strategy;
    }
    static const char* kTypes[] = {"bool", "int", "float", "str"};
    py::dict d;
    d["name"] = info.name;
    d["type"] = kTypes[static_cast<int>(info.type)];
    d["choices"] = info.choices;
    d["range"] = info.range;
    d["scope"] = name_of(info.scope);
    d["doc"] = info.doc;
    d["defaults"] = defaults;
    out.append(d);
  }
  return out;
}

py::dict graph_stats_to_dict(const GraphStats& s) {
  py::dict d;
  d["captures"] = s.captures;
  d["replays"] = s.replays;
  d["eager"] = s.eager;
  d["capture_seconds"] = s.capture_seconds;
  d["disabled_reason"] = s.disabled_reason;
  return d;
}

py::dict stats_to_dict(const DecodeStats& s) {
  py::dict d;
  d["strategy"] = name_of(s.strategy);
  d["stop_reason"] = name_of(s.stop_reason);
  d["prompt_tokens"] = s.prompt_tokens;
  d["new_tokens"] = s.new_tokens;
  d["seconds"] = s.time.total;
  d["tokens_per_second"] = s.tokens_per_second();
  d["prefill_seconds"] = s.time.prefill;
  d["graph_replays"] = s.graphs.replays;
  d["graph_captures"] = s.graphs.captures;
  d["eager_steps"] = s.graphs.eager;
  d["graph_capture_seconds"] = s.graphs.capture_seconds;
  d["graphs_note"] = s.graphs.disabled_reason;
  d["kv_cache_bytes"] = s.memory.kv_cache;
  d["kv_mirror_bytes"] = s.memory.kv_mirror;
  if (s.strategy == Strategy::AR) return d;
  d["selection_seconds"] = s.time.selection;
  d["draft_seconds"] = s.time.draft;
  d["verify_seconds"] = s.time.verify;
  d["draft_kv"] = name_of(s.draft_kv);
  d["draft_window"] = s.draft_window;
  const RoundStats& r = s.rounds;
  d["rounds"] = r.rounds;
  d["drafted"] = r.drafted;
  d["accepted"] = r.accepted;
  d["round_tokens"] = r.round_tokens;
  d["acceptance_rate"] = r.acceptance_rate();
  d["mean_accepted_length"] = r.mean_accepted_length();
  d["drafted_at"] = r.drafted_at;
  d["accepted_at"] = r.accepted_at;
  if (std::any_of(r.acceptance_tests_at.begin(), r.acceptance_tests_at.end(), [](int64_t n) { return n > 0; })) {
    std::vector<double> mean;  // sampling: mean min(1, p / q) per draft position (NaN where never tested)
    for (size_t i = 0; i < r.acceptance_tests_at.size(); ++i)
      mean.push_back(r.acceptance_tests_at[i] ? r.acceptance_probability_sum_at[i] / r.acceptance_tests_at[i] : NAN);
    d["mean_acceptance_probability_at"] = mean;
  }
  d["plain_steps"] = r.plain_steps;
  d["mean_draft_cap"] = r.mean_draft_cap();
  d["draft_exit"] = name_of(s.exit.exit);
  d["initial_gamma"] = s.exit.initial;
  d["final_gamma"] = s.exit.final;
  const PlanStats& p = s.plan;
  d["skipped_attention_layers"] = p.skipped_attention;
  d["skipped_mlp_layers"] = p.skipped_mlp;
  d["layer_similarity"] = p.attention_similarity;
  d["mlp_similarity"] = p.mlp_similarity;
  d["plan_note"] = p.note;
  d["reselections"] = p.reselections;
  py::dict drafted, accepted;
  for (const auto& [source, name] : EnumNames<DraftSource>::entries) {
    drafted[name] = s.source(source).drafted;
    accepted[name] = s.source(source).accepted;
  }
  d["drafted_by_source"] = drafted;
  d["accepted_by_source"] = accepted;
  d["fallback_switches"] = s.fallback_switches;
  if (p.cost_selections > 0) {
    d["cost_selections"] = p.cost_selections;
    d["predicted_acceptance"] = p.predicted_acceptance;
    d["predicted_gain"] = p.predicted_gain;
    d["plan_acceptance"] = p.plan_acceptance;  // -1 until the chosen plan drafted
  }
  return d;
}

}  // namespace dotf
