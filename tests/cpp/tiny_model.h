#pragma once
// Random-weight models built directly from tensors, for C++ tests (tiny Llama shapes) and benchmarks
// (realistic shapes: any ModelConfig, tied or untied, with Qwen2's QKV bias).
#include "model/transformer.h"

#include <ATen/ops/randn.h>

#include <memory>
#include <string>

namespace dotf::fixtures {

inline ModelConfig tiny_config(int64_t layers = 4, int64_t hidden = 64, int64_t heads = 4, int64_t kv_heads = 2,
                               int64_t vocab = 256) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = 2 * hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = 1024;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  return c;
}

inline TensorMap random_tensors(const ModelConfig& c, uint64_t seed = 0) {
  at::manual_seed(seed);
  auto randn = [](std::vector<int64_t> shape, double scale) { return at::randn(shape).mul_(scale); };
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  TensorMap t;
  t["model.embed_tokens.weight"] = randn({c.vocab_size, C}, 1.0);
  t["model.norm.weight"] = randn({C}, 0.1).add_(1.0);
  if (!c.tie_word_embeddings) t["lm_head.weight"] = randn({c.vocab_size, C}, 0.1);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = randn({C}, 0.1).add_(1.0);
    t[p + "post_attention_layernorm.weight"] = randn({C}, 0.1).add_(1.0);
    t[p + "self_attn.q_proj.weight"] = randn({c.q_size(), C}, 0.1);
    t[p + "self_attn.k_proj.weight"] = randn({c.kv_size(), C}, 0.1);
    t[p + "self_attn.v_proj.weight"] = randn({c.kv_size(), C}, 0.1);
    t[p + "self_attn.o_proj.weight"] = randn({C, c.q_size()}, 0.1);
    if (c.model_type == "qwen2") {  // build_weights requires Qwen2's QKV bias
      t[p + "self_attn.q_proj.bias"] = randn({c.q_size()}, 0.1);
      t[p + "self_attn.k_proj.bias"] = randn({c.kv_size()}, 0.1);
      t[p + "self_attn.v_proj.bias"] = randn({c.kv_size()}, 0.1);
    }
    t[p + "mlp.gate_proj.weight"] = randn({I, C}, 0.1);
    t[p + "mlp.up_proj.weight"] = randn({I, C}, 0.1);
    t[p + "mlp.down_proj.weight"] = randn({C, I}, 0.1);
  }
  return t;
}

inline std::shared_ptr<Transformer> tiny_model(at::ScalarType dtype = at::kDouble, ModelConfig c = tiny_config()) {
  return std::make_shared<Transformer>(c, build_weights(c, random_tensors(c), dtype, at::kCPU), 512);
}

}  // namespace dotf::fixtures
