#pragma once
// Hugging Face tensor names -> per-layer structs, with every shape checked against the config and
// the projections that read the same input fused (QKV, gate+up) so that a step makes fewer, larger
// matrix products.
#include "model/config.h"
#include "ops/linear.h"

#include <ATen/core/Tensor.h>

#include <string>
#include <unordered_map>
#include <vector>

namespace dotf {

using TensorMap = std::unordered_map<std::string, at::Tensor>;

struct LayerWeights {
  at::Tensor attn_norm;  // [C]
  Linear qkv;            // [(H + 2*KVH) * D, C] (+ bias for Qwen2)
  Linear o;              // [C, H * D]
  at::Tensor mlp_norm;   // [C]
  Linear gate_up;        // [2 * I, C]
  Linear down;           // [C, I]
};

struct ModelWeights {
  at::Tensor embed;       // [V, C]
  std::vector<LayerWeights> layers;
  at::Tensor final_norm;  // [C]
  Linear lm_head;         // [V, C]; shares embed's storage when embeddings are tied

  // Bytes of distinct weight storage (tied tensors counted once).
  int64_t nbytes() const;
  // Bytes the linear layers hold beyond their original weights (packed or quantized copies).
  int64_t extra_bytes() const;
  // Bytes a one-row step reads from the linear layers: each one's packed or quantized copy where it has
  // one, else its weight.
  int64_t step_bytes() const;
  // Every linear layer: per layer qkv, o, gate_up, down, then the LM head.
  template <typename Fn>
  void for_each_linear(Fn&& fn) const {
    for (const auto& l : layers)
      for (const Linear* lin : {&l.qkv, &l.o, &l.gate_up, &l.down}) fn(*lin);
    fn(lm_head);
  }
  // The same weights with every linear layer laid out for `path` (norms and embeddings shared).
  // lm_head: a head already laid out for `path` to share instead of laying out another (the LM head
  // screen's int8 copy for an int8 draft).
  ModelWeights with_linear_path(LinearPath path, const Linear* lm_head = nullptr) const;
};

// tensors: HF state-dict names -> tensors in any float dtype on any device. Missing or mis-shaped
// tensors throw ValueError naming the tensor. Results are in `dtype` on `device`.
ModelWeights build_weights(const ModelConfig& config, const TensorMap& tensors, at::ScalarType dtype,
                           at::Device device, LinearPath path = LinearPath::Aten);

}  // namespace dotf
