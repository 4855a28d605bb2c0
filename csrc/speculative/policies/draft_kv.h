#pragma once
// draft_kv="auto" (dotf's default on the CPU): which KV rows the draft's attention reads, chosen per call
// from byte counts, so that a long prompt gets the int8 mirror (and a window) without the caller asking.
// A draft step reads its weights once and, through attention, every KV row of the context. While those rows
// are a small share of the weights the exact cache is the cheapest (the mirror costs memory and a kernel no
// faster at short contexts); once they outweigh 15% of the weight bytes the draft reads the int8 mirror
// (a quarter of fp32's bytes); once even the mirror's rows outweigh 25%, a 1024-key window over it makes the
// step's cost stop growing (unless the caller set draft_window). The full model always reads every exact
// row, so the choice moves speed only, never the output.
// Where the shares come from (bench/README.md, "Long contexts"): the mirror lost a little for
// Qwen2.5-Coder-0.5B at 2k tokens (exact rows 0.10 of its int8 weights) and gained at 4k (0.20: 2.28-2.70x
// against 1.96-2.37x on the development prompts), and for SmolLM2-135M at 1k (0.34); the window gained for
// SmolLM2 at 4k (mirror rows 0.37), lost at 2k (0.18), and lost for Qwen at 8k (0.10), where its draft's
// agreement fell from 0.95 to 0.45.
#include "speculative/options.h"

#include <cstdint>

namespace dotf {

struct DraftKvChoice {
  DraftKV kv;      // Same or Int8, never Auto
  int64_t window;  // draft_window to use (0: every key)
};

// Byte counts of one call: the draft's weights as a step reads them, one position's exact KV rows and its
// int8 mirror rows (every layer), and the positions the call's cache holds (prompt + max_new_tokens).
struct DraftKvBytes {
  int64_t draft_weights = 0;
  int64_t exact_per_position = 0;
  int64_t mirror_per_position = 0;
  int64_t positions = 0;
};

// The options' draft_kv and draft_window with "auto" resolved; on a CUDA model "auto" is "same" (the int8
// mirror's CUDA kernels have not run on a GPU).
DraftKvChoice resolve_draft_kv(const GenerateOptions& options, bool cuda, const DraftKvBytes& bytes);

}  // namespace dotf
