#pragma once
// One loaded model and what persists between generate calls (the carried-over gamma). Each call
// gets its own KV cache sized to the request, so concurrent calls on one Engine never share state.
#include "model/transformer.h"
#include "spec/decoder.h"

#include <memory>
#include <mutex>
#include <string>

namespace dotf {

enum class Strategy { AR, ASD };
Strategy strategy_from_string(const std::string& name);  // "ar" | "asd"; ValueError otherwise

struct GenerateRequest {
  Strategy strategy = Strategy::AR;
  DecodeOptions decode;
  SpecOptions spec;
  double gamma = 0.6;
  double alpha = 0.9;
  bool carry_gamma = false;  // start from (and update) the gamma the previous call ended with
};

class Engine {
 public:
  explicit Engine(std::shared_ptr<const Transformer> model) : model_(std::move(model)) {}

  const Transformer& model() const { return *model_; }
  // Runs a request; with `cache` given, decodes into it (tests inspect it afterwards).
  DecodeResult generate(const at::Tensor& prompt, const GenerateRequest& request, KVCache* cache = nullptr);
  // Cache rows a request needs: prompt + new tokens (verify never writes past that, see decode_asd).
  static int64_t cache_rows(int64_t prompt_tokens, const GenerateRequest& request);

 private:
  std::shared_ptr<const Transformer> model_;
  std::mutex gamma_mutex_;
  double carried_gamma_ = -1;  // < 0: nothing carried yet
};

}  // namespace dotf
