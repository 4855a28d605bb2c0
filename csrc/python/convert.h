#pragma once
// Conversions between Python objects and the core's types, for the bindings: generate options by the
// option table (TypeError for a value of the wrong kind, ValueError out of range), statistics as the
// documented dict, and the option table itself for dotf.options().
#include "model/transformer.h"
#include "speculative/request.h"
#include "speculative/stats.h"

#include <torch/csrc/utils/pybind.h>

namespace dotf {

template <> struct EnumNames<LogitsFor> {
  static constexpr const char* what = "logits";
  static constexpr std::pair<LogitsFor, const char*> entries[] = {
      {LogitsFor::All, "all"}, {LogitsFor::Last, "last"}, {LogitsFor::None, "none"}};
};

// Sets each named option of `options` (a dict of name -> value) on `request.options`.
void apply_options(GenerateRequest& request, const pybind11::dict& options);

// Every option: name, type, choices, range, scope, doc, and its default per strategy and device.
pybind11::list option_table_to_python();

pybind11::dict stats_to_dict(const DecodeStats& stats);
pybind11::dict graph_stats_to_dict(const GraphStats& stats);

}  // namespace dotf
