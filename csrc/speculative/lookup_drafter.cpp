#include "speculative/lookup_drafter.h"

#include <algorithm>

namespace dotf {

std::vector<int64_t> ngram_lookup(const std::vector<int64_t>& history, const std::vector<int64_t>& tail, int64_t room,
                                  const LookupOptions& options) {
  const auto h = static_cast<int64_t>(history.size());
  const int64_t len = h + static_cast<int64_t>(tail.size());
  const auto at = [&](int64_t i) { return i < h ? history[i] : tail[i - h]; };  // history ++ tail, uncopied
  const int64_t max_tokens = std::min(room, options.max_tokens);
  if (max_tokens <= 0) return {};
  for (int64_t n = std::min(options.max_ngram, len - 1); n >= std::max<int64_t>(options.min_ngram, 1); --n) {
    const int64_t suffix = len - n;
    // Scan backwards: the most recent earlier occurrence predicts the continuation best.
    for (int64_t start = suffix - 1; start >= 0; --start) {
      int64_t i = 0;
      while (i < n && at(start + i) == at(suffix + i)) ++i;
      if (i < n) continue;
      const int64_t from = start + n;
      const int64_t count = std::min(max_tokens, len - from);
      if (count <= 0) continue;
      std::vector<int64_t> out(count);
      for (int64_t j = 0; j < count; ++j) out[j] = at(from + j);
      return out;
    }
  }
  return {};
}

void LookupDrafter::propose(const DraftContext& ctx, int64_t max_tokens, Proposal& out) {
  for (int64_t token : ngram_lookup(ctx.history, out.tokens, max_tokens - out.size(), options_))
    out.push(token, DraftSource::Lookup);
}

}  // namespace dotf
