#pragma once
// How tokens are chosen from logits and how a round's drafts are judged: a rule the loop and the model
// drafter call, so that greedy decoding and sampling share one loop.
//   GreedyAcceptance: the output is exactly the full model's greedy tokens: keep the longest prefix of
//     drafts equal to the full model's argmax, then the full model's own next token.
//   SamplingAcceptance: the output is distributed exactly as the full model's own sampling (ops/sample.h):
//     drafts are drawn from the draft's warped distribution q and kept with probability min(1, p / q),
//     the first rejected one is replaced by a draw from norm(max(0, p - q)), and a round that keeps
//     every draft adds a draw from p.
#include "core/random.h"
#include "ops/sample.h"
#include "speculative/drafter.h"
#include "speculative/options.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace dotf {

// A round's outcome: the first `accepted` drafts are kept, then `next`, the full model's token after them.
struct Verdict {
  int64_t accepted = 0;
  int64_t next = -1;
  // Sampling: min(1, p / q) of each draft the test reached (the kept ones and the first rejected one).
  std::vector<double> acceptance_probability;
};

// The draft pass's tokens. Rows before the last check proposals (lookup drafts riding in the pass): ids[r]
// equals proposed[r] while the proposal is kept, and the first row that differs holds the draft's own
// token instead (rows after it may be missing).
struct DraftChoice {
  std::vector<int64_t> ids;       // -1 for a non-finite row (it proposes nothing)
  std::vector<float> confidence;  // per row of ids: what the draft exit thresholds (see DraftExit)
  at::Tensor q;                   // sampling: [rows, V] the draft's warped distributions; else undefined

  at::Tensor q_row(int64_t r) const { return q.defined() ? q[r] : at::Tensor(); }
};

class AcceptanceRule {
 public:
  virtual ~AcceptanceRule() = default;
  // The full model's next token from the last row of logits [T, V] (the prefill, plain steps).
  // Non-finite logits are an error, never a silently chosen token.
  virtual int64_t choose(const at::Tensor& logits) = 0;
  // The draft's choice for each row of its logits [T, V]; `proposed` holds the T - 1 proposals the rows
  // before the last check.
  virtual DraftChoice draft(const at::Tensor& logits, DraftExit exit, const std::vector<int64_t>& proposed) = 0;
  // The verdict on `proposal` from the verify pass's logits [k + 1, V] over [last, d1..dk].
  virtual Verdict accept(const Proposal& proposal, const at::Tensor& verify_logits) = 0;
};

class GreedyAcceptance final : public AcceptanceRule {
 public:
  int64_t choose(const at::Tensor& logits) override;
  DraftChoice draft(const at::Tensor& logits, DraftExit exit, const std::vector<int64_t>& proposed) override;
  // Judged on the device: one host read of (accepted, next) per round.
  Verdict accept(const Proposal& proposal, const at::Tensor& verify_logits) override;
};

class SamplingAcceptance final : public AcceptanceRule {
 public:
  SamplingAcceptance(const SamplingParams& params, uint64_t seed) : params_(params), random_(seed) {}
  int64_t choose(const at::Tensor& logits) override;
  // A proposal x is kept with probability q(x) and otherwise replaced by a draw from q without x: either
  // way the row's token is a draw from q, so it is judged against q like the draft's own tokens.
  DraftChoice draft(const at::Tensor& logits, DraftExit exit, const std::vector<int64_t>& proposed) override;
  Verdict accept(const Proposal& proposal, const at::Tensor& verify_logits) override;

 private:
  // speculative_accept on the device of p, with uniforms from the stream: the verdict on the host, in one
  // read that also brings p's probability of the next token when next_prob is given.
  Verdict judge(const at::Tensor& p, const at::Tensor& q, const std::vector<int64_t>& drafts,
                const std::vector<bool>& lookup, float* next_prob = nullptr);
  SamplingParams params_;
  RandomStream random_;
};

// The rule a request asks for: sampling when options.do_sample, else greedy.
std::unique_ptr<AcceptanceRule> make_acceptance_rule(const GenerateOptions& options, uint64_t seed);

// How many of each row's largest logits that rule's choose() and accept() read (every logit tied with the
// k-th included), so that the full model's passes may leave the others at -inf (ForwardOptions::
// logits_top_k): 1 for greedy (the argmax); top_k under sampling, as top-k comes first among the warpers
// and gives every other token probability 0 whatever its logit (warped_probabilities); 0: every logit.
// draft() reads every logit (its exit confidence spans the vocabulary), so draft passes compute them all.
int64_t logits_read(const GenerateOptions& options);

}  // namespace dotf
