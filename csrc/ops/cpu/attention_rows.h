#pragma once
// Which keys each query row of a fused CPU attention call sees (causal, optionally windowed), and how a
// call splits across threads, shared by the attention kernel's builds (attention_kernel.h) and the int8
// mirror's VNNI kernel (attention_int8_vnni.cpp).
#include "ops/attention.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dotf::avx2 {

// Which keys a query row sees, as a compact index j in [0, n): key j for j < split, key j + gap after.
// Every key up to its position (gap 0, split n), or under a window (ops/attention.h) the first
// kAttentionSinks keys and its last `window` ones.
struct RowKeys {
  int64_t n, split, gap;
  int64_t key(int64_t j) const { return j < split ? j : j + gap; }
};

inline RowKeys row_keys(int64_t keys, int64_t window) {
  const int64_t gap = window > 0 ? std::max<int64_t>(0, keys - kAttentionSinks - window) : 0;
  return gap > 0 ? RowKeys{keys - gap, kAttentionSinks, gap} : RowKeys{keys, keys, 0};
}

// How many rows from i on (at most `most`) see the same keys at each compact index: rows of one gap (the
// window hides the same keys from them), which may differ in how many keys they see.
inline int64_t same_keys_run(const std::vector<RowKeys>& seen, int64_t i, int64_t most) {
  int64_t g = 1;
  while (g < most && i + g < static_cast<int64_t>(seen.size()) && seen[i + g].gap == seen[i].gap) ++g;
  return g;
}

// The parallel_for grain over a call's KV heads: one task per head (each independent, the same numbers on
// any thread), or all of them in one task when the call is too small to pay for splitting.
inline int64_t kv_head_grain(int64_t keys, int64_t query_rows_per_head, int64_t D, int64_t KVH) {
  return keys * query_rows_per_head * D < 65536 ? KVH : 1;
}

}  // namespace dotf::avx2
