#include "speculative/policies/draft_kv.h"

namespace dotf {

namespace {
// KV bytes a draft step reads, as a share of its weight bytes, from which the mirror (the exact rows') and the
// window (the mirror's rows') pay.
constexpr double kMirrorShare = 0.15, kWindowShare = 0.25;
constexpr int64_t kAutoWindow = 1024;  // the window measured in bench/README.md, "Long contexts"

bool outweighs(int64_t per_position, double share, const DraftKvBytes& b) {
  return static_cast<double>(per_position) * static_cast<double>(b.positions) >
         share * static_cast<double>(b.draft_weights);
}
}  // namespace

DraftKvChoice resolve_draft_kv(const GenerateOptions& o, bool cuda, const DraftKvBytes& bytes) {
  if (o.draft_kv != DraftKV::Auto) return {o.draft_kv, o.draft_window};
  if (cuda || !outweighs(bytes.exact_per_position, kMirrorShare, bytes)) return {DraftKV::Same, o.draft_window};
  const bool window = o.draft_window == 0 && outweighs(bytes.mirror_per_position, kWindowShare, bytes);
  return {DraftKV::Int8, window ? kAutoWindow : o.draft_window};
}

}  // namespace dotf
