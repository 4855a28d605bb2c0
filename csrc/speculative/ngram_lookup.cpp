#include "speculative/ngram_lookup.h"

#include <algorithm>

namespace dotf {

std::vector<int64_t> ngram_lookup(const std::vector<int64_t>& history, int64_t room,
                                  const NgramLookupOptions& options) {
  const int64_t len = static_cast<int64_t>(history.size());
  const int64_t max_tokens = std::min(room, options.max_tokens);
  if (max_tokens <= 0) return {};
  for (int64_t n = std::min(options.max_ngram, len - 1); n >= std::max<int64_t>(options.min_ngram, 1); --n) {
    const int64_t suffix = len - n;
    // Scan backwards: the most recent earlier occurrence predicts the continuation best.
    for (int64_t start = suffix - 1; start >= 0; --start) {
      if (!std::equal(history.begin() + start, history.begin() + start + n, history.begin() + suffix)) continue;
      const int64_t from = start + n;
      const int64_t count = std::min(max_tokens, len - from);
      if (count <= 0) continue;
      return std::vector<int64_t>(history.begin() + from, history.begin() + from + count);
    }
  }
  return {};
}

}  // namespace dotf
