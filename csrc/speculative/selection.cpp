#include "speculative/selection.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>

namespace dotf {

void validate(const SelectionOptions& o) {
  find_option("threshold").check(o.threshold);
  find_option("budget").check(o.budget);
  find_option("keep_first").check(o.keep_first);
}

LayerPlan select_draft_plan(const std::vector<double>& s, const SelectionOptions& o) {
  validate(o);
  const int64_t L = static_cast<int64_t>(s.size());
  LayerPlan plan = LayerPlan::full(L);
  std::vector<int64_t> candidates;
  for (int64_t l = o.keep_first; l < L; ++l)
    if (!std::isnan(s[l]) && s[l] >= o.threshold) candidates.push_back(l);
  const auto max_skip = static_cast<size_t>(std::floor(o.budget * static_cast<double>(L) + 1e-9));
  if (candidates.size() > max_skip) {
    // Keep the most redundant ones; ties go to the earlier layer so the plan is deterministic.
    std::stable_sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) { return s[a] > s[b]; });
    candidates.resize(max_skip);
  }
  for (int64_t l : candidates) plan.attention[l] = false;
  return plan;
}

}  // namespace dotf
