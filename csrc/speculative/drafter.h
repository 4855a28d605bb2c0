#pragma once
// The drafter interface: a drafter proposes the tokens that follow the last emitted one, for the full
// model to verify in one pass. Two exist: the model drafter (the model's own or quantized weights
// under a layer plan, speculative/model_drafter.h) and the lookup drafter (n-gram lookup in the prompt
// and output, speculative/lookup_drafter.h), which the model drafter also consults mid-round.
#include "speculative/stats.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace dotf {

struct DraftContext {
  const std::vector<int64_t>& history;  // prompt + emitted tokens; back() is the last emitted token
  int64_t position;                     // the last token's position: it is not in the cache yet
};

// A round's drafted tokens, each with the drafter it came from and, when sampling, the distribution it
// was drawn from.
struct Proposal {
  std::vector<int64_t> tokens;
  std::vector<DraftSource> sources;
  // Sampling only: per token the draft's warped distribution ([V] on the model's device) it was drawn
  // from; undefined for a token proposed deterministically (a lookup no draft pass checked: its
  // distribution is its indicator) and for every token under greedy decoding.
  std::vector<at::Tensor> q;

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  void push(int64_t token, DraftSource source, at::Tensor q_row = {}) {
    tokens.push_back(token);
    sources.push_back(source);
    q.push_back(std::move(q_row));
  }
  void truncate(int64_t n) {
    if (n >= size()) return;
    tokens.resize(n);
    sources.resize(n);
    q.resize(n);
  }
};

class Drafter {
 public:
  virtual ~Drafter() = default;
  // Appends tokens to `out` (which may already hold this round's earlier drafts), so that it holds at
  // most max_tokens. A model drafter writes draft KV rows from ctx.position on; the verify pass
  // rewrites them.
  virtual void propose(const DraftContext& ctx, int64_t max_tokens, Proposal& out) = 0;
};

}  // namespace dotf
