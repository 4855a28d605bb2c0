#include "speculative/acceptance.h"

#include "model/transformer.h"
#include "ops/accept.h"
#include "ops/sampling.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>

#include <algorithm>

namespace dotf {

namespace {

std::vector<int64_t> to_host(const at::Tensor& ids) {
  at::Tensor cpu = ids.to(at::kCPU).contiguous();
  return std::vector<int64_t>(cpu.data_ptr<int64_t>(), cpu.data_ptr<int64_t>() + cpu.numel());
}

std::vector<float> floats_to_host(const at::Tensor& x) {
  at::Tensor cpu = x.to(at::kCPU, at::kFloat).contiguous();
  return std::vector<float>(cpu.data_ptr<float>(), cpu.data_ptr<float>() + cpu.numel());
}

// A small host tensor on `device`. To CUDA it goes through pinned memory without waiting: a copy from
// pageable memory synchronizes the stream, a host round trip per upload on top of the round's one read.
at::Tensor to_device(const at::Tensor& host, at::Device device) {
  return device.is_cpu() ? host : host.pin_memory().to(device, /*non_blocking=*/true);
}

void check_finite(int64_t id, const char* where) {
  DOTF_CHECK(id >= 0, "the model produced non-finite logits (NaN or inf) ", where,
             "; the weights or the dtype cannot represent this computation");
}

}  // namespace

int64_t GreedyAcceptance::choose(const at::Tensor& logits) {
  const int64_t id = to_host(argmax_top1(logits.slice(0, -1), /*with_prob=*/false).first)[0];
  check_finite(id, "at the last position");
  return id;
}

DraftChoice GreedyAcceptance::draft(const at::Tensor& logits, DraftExit exit, const std::vector<int64_t>&) {
  const bool margin = exit == DraftExit::Margin;
  auto [ids, probs] = argmax_top1(logits, /*with_prob=*/!margin);
  return DraftChoice{to_host(ids), floats_to_host(margin ? top1_margin(logits, ids) : probs), {}};
}

Verdict GreedyAcceptance::accept(const Proposal& proposal, const at::Tensor& verify_logits) {
  const at::Tensor target = argmax_top1(verify_logits, /*with_prob=*/false).first;
  const at::Tensor drafted = token_tensor(proposal.tokens).to(target.device());
  const std::vector<int64_t> verdict = to_host(greedy_accept(drafted, target));
  check_finite(verdict[1], "while verifying");
  return {verdict[0], verdict[1], {}};
}

Verdict SamplingAcceptance::judge(const at::Tensor& p, const at::Tensor& q, const std::vector<int64_t>& drafts,
                                  const std::vector<bool>& lookup, float* next_prob) {
  const auto k = static_cast<int64_t>(drafts.size());
  at::Tensor is_lookup = at::empty({k}, at::TensorOptions().dtype(at::kBool));
  for (int64_t i = 0; i < k; ++i) is_lookup.data_ptr<bool>()[i] = lookup[i];
  const at::Device device = p.device();
  const auto [verdict_t, ratios_t] = speculative_accept(p, q, to_device(token_tensor(drafts), device),
                                                        to_device(is_lookup, device),
                                                        to_device(random_.uniforms(k + 1), device));
  // One host read: (accepted, next), the k ratios, and p's probability of next (in row `accepted`) when
  // asked, gathered on the device into one float64 tensor (token ids are exact in it).
  std::vector<at::Tensor> parts{verdict_t.to(at::kDouble), ratios_t};
  if (next_prob) {
    const at::Tensor at_next = verdict_t.select(0, 0).mul(p.size(1)).add(verdict_t.select(0, 1).clamp_min(0));
    parts.push_back(p.reshape({-1}).index_select(0, at_next.reshape({1})).to(at::kDouble));
  }
  const at::Tensor host = at::cat(parts).to(at::kCPU).contiguous();
  const double* h = host.data_ptr<double>();
  Verdict v{static_cast<int64_t>(h[0]), static_cast<int64_t>(h[1]), {}};
  // On CUDA a bad logits row reaches this point as a NaN row (the warp does not read back), and the draw
  // from it returns -1; on the CPU the warp has already raised.
  check_finite(v.next, "while sampling");
  v.acceptance_probability.assign(h + 2, h + 2 + std::min(k, v.accepted + 1));
  if (next_prob) *next_prob = static_cast<float>(h[2 + k]);
  return v;
}

int64_t SamplingAcceptance::choose(const at::Tensor& logits) {
  const at::Tensor p = warped_probabilities(logits.slice(0, -1), params_);
  return judge(p, p.slice(0, 0, 0), {}, {}).next;
}

DraftChoice SamplingAcceptance::draft(const at::Tensor& logits, DraftExit exit, const std::vector<int64_t>& proposed) {
  // Checking proposals against q is a speculative round of its own, with q as the target and the
  // proposals as deterministic drafts: kept with probability q(x), else a draw from q without x.
  const at::Tensor q = warped_probabilities(logits, params_);
  const auto m = static_cast<int64_t>(proposed.size());
  const bool margin = exit == DraftExit::Margin;
  float next_prob = 0;
  const Verdict v = judge(q, q.slice(0, 0, m), proposed, std::vector<bool>(m, true),  // lookup rows: q not read
                          margin ? nullptr : &next_prob);
  DraftChoice out;
  out.ids.assign(proposed.begin(), proposed.begin() + v.accepted);
  out.ids.push_back(v.next);
  out.q = q;
  const int64_t row = v.accepted;
  out.confidence.assign(row, 1.0f);  // kept proposals: the pass goes on past them
  float confidence = next_prob;
  if (margin) {
    const at::Tensor last = logits.slice(0, row, row + 1);
    confidence = floats_to_host(top1_margin(last, argmax_top1(last, /*with_prob=*/false).first))[0];
  }
  out.confidence.push_back(confidence);
  return out;
}

Verdict SamplingAcceptance::accept(const Proposal& proposal, const at::Tensor& verify_logits) {
  const at::Tensor p = warped_probabilities(verify_logits, params_);
  std::vector<at::Tensor> rows;
  std::vector<bool> lookup;
  for (int64_t i = 0; i < proposal.size(); ++i) {
    lookup.push_back(!proposal.q[i].defined());
    rows.push_back(lookup.back() ? p[i] : proposal.q[i].to(p.scalar_type()));  // a lookup row is not read
  }
  const at::Tensor q = rows.empty() ? p.slice(0, 0, 0) : at::stack(rows);
  return judge(p, q, proposal.tokens, lookup);
}

std::unique_ptr<AcceptanceRule> make_acceptance_rule(const GenerateOptions& o, uint64_t seed) {
  if (!o.do_sample) return std::make_unique<GreedyAcceptance>();
  return std::make_unique<SamplingAcceptance>(SamplingParams{o.temperature, o.top_k, o.top_p, o.min_p}, seed);
}

int64_t logits_read(const GenerateOptions& o) { return o.do_sample ? o.top_k : 1; }

}  // namespace dotf
