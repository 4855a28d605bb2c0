#pragma once
// The tokens a call emits: it honours EOS and max_new_tokens exactly (nothing past either is kept),
// streams each chunk to the caller, and keeps prompt + output for lookup drafts.
#include "speculative/request.h"
#include "speculative/stats.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

namespace dotf {

class Output {
 public:
  // prompt: [P] int64 CPU.
  Output(const GenerateRequest& request, const at::Tensor& prompt, std::vector<int64_t>& tokens, DecodeStats& stats)
      : request_(request), tokens_(tokens), stats_(stats) {
    const at::Tensor p = prompt.contiguous();
    history_.assign(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  }

  // Emits a chunk; returns true when generation is finished.
  bool emit(const std::vector<int64_t>& chunk) {
    const size_t before = tokens_.size();
    for (int64_t token : chunk) {
      if (done()) break;
      tokens_.push_back(token);
      if (is_eos(token)) stats_.stop_reason = StopReason::Eos;
    }
    if (!done() && remaining() == 0) stats_.stop_reason = StopReason::MaxNewTokens;
    history_.insert(history_.end(), tokens_.begin() + before, tokens_.end());
    if (tokens_.size() > before && request_.on_tokens &&
        request_.on_tokens(std::vector<int64_t>(tokens_.begin() + before, tokens_.end())) && !done())
      stats_.stop_reason = StopReason::Caller;
    return done();
  }
  bool done() const { return stats_.stop_reason != StopReason::Running; }
  int64_t remaining() const { return request_.options.max_new_tokens - static_cast<int64_t>(tokens_.size()); }
  int64_t emitted() const { return static_cast<int64_t>(tokens_.size()); }
  bool is_eos(int64_t token) const {
    const auto& eos = request_.eos_token_ids;
    return std::find(eos.begin(), eos.end(), token) != eos.end();
  }
  void check_interrupt() const {
    if (request_.check_interrupt) request_.check_interrupt();
  }
  // Prompt + emitted tokens; back() is the last emitted token.
  const std::vector<int64_t>& history() const { return history_; }

 private:
  const GenerateRequest& request_;
  std::vector<int64_t>& tokens_;
  DecodeStats& stats_;
  std::vector<int64_t> history_;
};

}  // namespace dotf
