#include "speculative/model_drafter.h"

#include <algorithm>

namespace dotf {

bool ModelDrafter::is_eos(int64_t token) const {
  return std::find(p_.eos_token_ids.begin(), p_.eos_token_ids.end(), token) != p_.eos_token_ids.end();
}

void ModelDrafter::propose(const DraftContext& ctx, int64_t max_tokens, Proposal& out) {
  int64_t unchecked = out.size();  // proposals at the end of `out` the draft model has not checked yet
  if (p_.lookup) {
    const int64_t before = out.size();
    p_.lookup->propose(ctx, max_tokens, out);
    unchecked += out.size() - before;
    if (!p_.lookup_check && unchecked > 0) return;
  }
  std::vector<int64_t> feed{ctx.history.back()};
  feed.insert(feed.end(), out.tokens.end() - unchecked, out.tokens.end());
  int64_t position = ctx.position;
  // A pass runs while proposals wait for their check (even when they already fill max_tokens) or there
  // is room for another model token.
  while (unchecked > 0 || out.size() < max_tokens) {
    const auto rows = static_cast<int64_t>(feed.size());
    std::vector<double>* profile = p_.plan.profile_target(rows);
    ForwardOptions options{rows > 1 ? LogitsFor::All : LogitsFor::Last, false, profile};
    options.int8_kv = p_.int8_kv;
    options.attention_window = p_.attention_window;
    const ForwardOutput d = p_.steps.forward(feed, position, p_.cache, p_.plan.plan(), options, p_.weights);
    if (profile) p_.plan.profile_taken();
    // Row i predicts the token after feed[i]; rows before the last check the unchecked proposals.
    const int64_t first = out.size() - unchecked;
    const DraftChoice choice =
        p_.rule.draft(d.logits, p_.exit_kind, std::vector<int64_t>(out.tokens.begin() + first, out.tokens.end()));
    int64_t row = 0;
    for (; row < unchecked && choice.ids[row] == out.tokens[first + row]; ++row)
      out.q[first + row] = choice.q_row(row);  // sampling: a kept proposal is a draw from the draft's q
    out.truncate(first + row);                 // the first disagreement drops the rest
    position += row + 1;
    const int64_t token = choice.ids[row];
    if (token < 0) break;  // a non-finite draft proposes nothing; the verify pass reports real trouble
    out.push(token, DraftSource::Model, choice.q_row(row));
    if (p_.exit.stops(choice.confidence[row]) || is_eos(token)) break;
    feed = {token};
    unchecked = 0;
    // Mid-round lookup: the output plus this round's drafts may now continue an n-gram seen before; its
    // tokens ride in the next pass, which checks them as it drafts the token after `token`.
    if (p_.lookup && p_.lookup_every_step && out.size() < max_tokens) {
      const int64_t before = out.size();
      p_.lookup->propose(ctx, max_tokens, out);
      unchecked = out.size() - before;
      if (!p_.lookup_check && unchecked > 0) break;
      feed.insert(feed.end(), out.tokens.begin() + before, out.tokens.end());
    }
  }
  out.truncate(max_tokens);  // the agreement pass can add one past max_tokens
}

}  // namespace dotf
