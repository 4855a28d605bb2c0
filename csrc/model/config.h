#pragma once
// The architecture description of a decoder-only transformer, as Hugging Face's config.json defines
// it for LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM. Python parses config.json (and
// refuses unsupported fields by name); C++ re-validates the numbers it relies on.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace dotf {

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct ModelConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;

  // Throws ValueError naming the field when the numbers are inconsistent.
  void validate() const;
  int64_t q_size() const { return num_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }

  // Inverse rotary frequencies [head_dim / 2], float32, computed exactly as transformers does
  // (float32 arithmetic) so that float64 runs match the reference bit for bit where possible.
  at::Tensor rope_inv_freq() const;
};

}  // namespace dotf
