#include "spec/engine.h"

#include "common/check.h"

namespace dotf {

Strategy strategy_from_string(const std::string& name) {
  if (name == "ar") return Strategy::AR;
  if (name == "asd") return Strategy::ASD;
  throw ValueError("strategy must be one of 'ar', 'asd', got '" + name + "'");
}

int64_t Engine::cache_rows(int64_t prompt_tokens, const GenerateRequest& request) {
  return prompt_tokens + request.decode.max_new_tokens;
}

DecodeResult Engine::generate(const at::Tensor& prompt, const GenerateRequest& request, KVCache* cache) {
  const Transformer& m = *model_;
  validate(request.decode, m.config().vocab_size);
  DOTF_CHECK_DIM(prompt, 1, "input_ids");
  const int64_t rows = cache_rows(prompt.size(0), request);
  DOTF_CHECK_ARG(rows <= m.max_seq_len(), "prompt (", prompt.size(0), " tokens) + max_new_tokens (",
                 request.decode.max_new_tokens, ") = ", rows, " exceeds max_seq_len ", m.max_seq_len());
  KVCache local;
  if (!cache) {
    local = m.new_cache(rows);
    cache = &local;
  }
  if (request.strategy == Strategy::AR) return decode_ar(m, prompt, *cache, request.decode);

  AdaptiveGamma gamma{request.gamma, request.alpha, 0.0};
  if (request.carry_gamma) {
    std::lock_guard<std::mutex> lock(gamma_mutex_);
    if (carried_gamma_ > 0) gamma.gamma = carried_gamma_;
  }
  DecodeResult result = decode_asd(m, prompt, *cache, request.decode, request.spec, gamma);
  std::lock_guard<std::mutex> lock(gamma_mutex_);
  carried_gamma_ = gamma.gamma;
  return result;
}

}  // namespace dotf
