#include "model/weights.h"

#include "core/check.h"

#include <ATen/ops/cat.h>

#include <unordered_set>

namespace dotf {

namespace {

class WeightReader {
 public:
  WeightReader(const TensorMap& tensors, at::ScalarType dtype, at::Device device)
      : tensors_(tensors), dtype_(dtype), device_(device) {}

  at::Tensor get(const std::string& name, std::vector<int64_t> shape) const {
    auto it = tensors_.find(name);
    DOTF_CHECK_ARG(it != tensors_.end(), "missing tensor '", name, "' in the checkpoint");
    const at::Tensor& t = it->second;
    DOTF_CHECK_ARG(t.defined(), "tensor '", name, "' is undefined");
    DOTF_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "tensor '", name, "' must be floating point, got ",
                    t.scalar_type());
    DOTF_CHECK_ARG(t.sizes() == c10::IntArrayRef(shape), "tensor '", name, "' has shape ", t.sizes(),
                   ", expected ", c10::IntArrayRef(shape));
    return t.to(device_, dtype_).contiguous();
  }
  std::optional<at::Tensor> maybe(const std::string& name, std::vector<int64_t> shape) const {
    if (!tensors_.count(name)) return std::nullopt;
    return get(name, std::move(shape));
  }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }

 private:
  const TensorMap& tensors_;
  at::ScalarType dtype_;
  at::Device device_;
};

LayerWeights read_layer(const WeightReader& r, const ModelConfig& c, int64_t i, LinearPath path) {
  const std::string p = "model.layers." + std::to_string(i) + ".";
  const int64_t C = c.hidden_size, Q = c.q_size(), KV = c.kv_size(), I = c.intermediate_size;
  LayerWeights w;
  w.attn_norm = r.get(p + "input_layernorm.weight", {C});
  w.mlp_norm = r.get(p + "post_attention_layernorm.weight", {C});

  at::Tensor qkv = at::cat({r.get(p + "self_attn.q_proj.weight", {Q, C}), r.get(p + "self_attn.k_proj.weight", {KV, C}),
                            r.get(p + "self_attn.v_proj.weight", {KV, C})});
  std::optional<at::Tensor> qkv_bias;
  const bool has_bias = r.has(p + "self_attn.q_proj.bias");
  DOTF_CHECK_ARG(has_bias || c.model_type != "qwen2", "missing tensor '", p, "self_attn.q_proj.bias' (Qwen2 uses QKV bias)");
  if (has_bias) {
    qkv_bias = at::cat({r.get(p + "self_attn.q_proj.bias", {Q}), r.get(p + "self_attn.k_proj.bias", {KV}),
                        r.get(p + "self_attn.v_proj.bias", {KV})});
  }
  w.qkv = Linear(qkv, qkv_bias, path);
  w.o = Linear(r.get(p + "self_attn.o_proj.weight", {C, Q}), r.maybe(p + "self_attn.o_proj.bias", {C}), path);
  at::Tensor gate_up = at::cat({r.get(p + "mlp.gate_proj.weight", {I, C}), r.get(p + "mlp.up_proj.weight", {I, C})});
  std::optional<at::Tensor> gate_up_bias;
  if (r.has(p + "mlp.gate_proj.bias")) {
    gate_up_bias = at::cat({r.get(p + "mlp.gate_proj.bias", {I}), r.get(p + "mlp.up_proj.bias", {I})});
  }
  w.gate_up = Linear(gate_up, gate_up_bias, path);
  w.down = Linear(r.get(p + "mlp.down_proj.weight", {C, I}), r.maybe(p + "mlp.down_proj.bias", {C}), path);
  return w;
}

}  // namespace

ModelWeights build_weights(const ModelConfig& c, const TensorMap& tensors, at::ScalarType dtype, at::Device device,
                           LinearPath path) {
  c.validate();
  WeightReader r(tensors, dtype, device);
  ModelWeights w;
  w.embed = r.get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  for (int64_t i = 0; i < c.num_layers; ++i) w.layers.push_back(read_layer(r, c, i, path));
  w.final_norm = r.get("model.norm.weight", {c.hidden_size});
  if (c.tie_word_embeddings) {
    w.lm_head = Linear(w.embed, std::nullopt, path);
  } else {
    w.lm_head = Linear(r.get("lm_head.weight", {c.vocab_size, c.hidden_size}), std::nullopt, path);
  }
  return w;
}

ModelWeights ModelWeights::with_linear_path(LinearPath path, const Linear* head) const {
  DOTF_CHECK_ARG(!head || (head->path() == path && head->weight().is_same(lm_head.weight())),
                 "with_linear_path: the shared head must be a '", to_string(path), "' copy of this LM head");
  ModelWeights out = *this;
  for (auto& layer : out.layers) {
    for (Linear* lin : {&layer.qkv, &layer.o, &layer.gate_up, &layer.down}) *lin = lin->with_path(path);
  }
  out.lm_head = head ? *head : lm_head.with_path(path);
  return out;
}

int64_t ModelWeights::nbytes() const {
  std::unordered_set<const void*> seen;
  int64_t total = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined() && seen.insert(t.data_ptr()).second) total += t.nbytes();
  };
  auto add_linear = [&](const Linear& l) {
    add(l.weight());
    if (l.bias()) add(*l.bias());
    total += l.extra_bytes();
  };
  add(embed);
  add(final_norm);
  for (const auto& l : layers) {
    add(l.attn_norm);
    add(l.mlp_norm);
  }
  for_each_linear(add_linear);
  return total;
}

int64_t ModelWeights::step_bytes() const {
  int64_t total = 0;
  for_each_linear([&](const Linear& l) {
    const int64_t copy = l.extra_bytes();
    total += copy > 0 ? copy : l.weight().nbytes();
  });
  return total;
}

int64_t ModelWeights::extra_bytes() const {
  int64_t total = 0;
  for_each_linear([&](const Linear& l) { total += l.extra_bytes(); });
  return total;
}

}  // namespace dotf
