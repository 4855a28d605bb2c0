#include "model/layer_plan.h"

#include "core/check.h"

namespace dotf {

namespace {
std::vector<int64_t> off_indices(const std::vector<bool>& on) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < on.size(); ++i)
    if (!on[i]) out.push_back(static_cast<int64_t>(i));
  return out;
}
}  // namespace

bool LayerPlan::is_full() const {
  return skipped_attention().empty() && skipped_mlp().empty();
}
std::vector<int64_t> LayerPlan::skipped_attention() const { return off_indices(attention); }
std::vector<int64_t> LayerPlan::skipped_mlp() const { return off_indices(mlp); }

void LayerPlan::validate(int64_t num_layers) const {
  DOTF_CHECK_ARG(static_cast<int64_t>(attention.size()) == num_layers && static_cast<int64_t>(mlp.size()) == num_layers,
                 "layer plan must have ", num_layers, " attention and mlp entries, got ", attention.size(), " and ",
                 mlp.size());
}

std::string LayerPlan::key() const {
  // Built with to_string, not a std::ostream: see detail::append in core/check.h.
  std::string s;
  auto list = [&](const std::vector<int64_t>& v) {
    s += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(v[i]);
    }
    s += ']';
  };
  s += "attn-skip";
  list(skipped_attention());
  s += " mlp-skip";
  list(skipped_mlp());
  return s;
}

}  // namespace dotf
