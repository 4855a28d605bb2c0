#include "model/config.h"

#include "core/check.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/pow.h>
#include <ATen/ops/where.h>

#include <cmath>

namespace dotf {

void ModelConfig::validate() const {
  DOTF_CHECK_ARG(model_type == "llama" || model_type == "mistral" || model_type == "qwen2",
                 "config.model_type '", model_type, "' is not supported (llama, mistral, qwen2)");
  auto positive = [](int64_t v, const char* name) {
    DOTF_CHECK_ARG(v > 0, "config.", name, " must be > 0, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(max_position_embeddings, "max_position_embeddings");
  DOTF_CHECK_ARG(num_heads % num_kv_heads == 0, "config.num_attention_heads (", num_heads,
                 ") must be a multiple of num_key_value_heads (", num_kv_heads, ")");
  DOTF_CHECK_ARG(head_dim % 2 == 0, "config.head_dim must be even for rotary embeddings, got ", head_dim);
  DOTF_CHECK_ARG(rms_norm_eps > 0, "config.rms_norm_eps must be > 0, got ", rms_norm_eps);
  DOTF_CHECK_ARG(rope_theta > 0, "config.rope_theta must be > 0, got ", rope_theta);
  DOTF_CHECK_ARG(rope_scaling.type.empty() || rope_scaling.type == "llama3",
                 "config.rope_scaling.rope_type '", rope_scaling.type, "' is not supported (none, llama3)");
  if (rope_scaling.type == "llama3") {
    DOTF_CHECK_ARG(rope_scaling.factor > 0, "config.rope_scaling.factor must be > 0");
    DOTF_CHECK_ARG(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor,
                   "config.rope_scaling.high_freq_factor must exceed low_freq_factor");
    DOTF_CHECK_ARG(rope_scaling.original_max_position_embeddings > 0,
                   "config.rope_scaling.original_max_position_embeddings must be > 0");
  }
}

at::Tensor ModelConfig::rope_inv_freq() const {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor exponent = at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
                        static_cast<double>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(at::scalar_tensor(rope_theta, f32), exponent);
  if (rope_scaling.type != "llama3") return inv_freq;

  // Llama 3.1 frequency-dependent scaling (transformers' _compute_llama3_parameters).
  const auto& rs = rope_scaling;
  const double old_len = static_cast<double>(rs.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / rs.low_freq_factor;
  const double high_freq_wavelen = old_len / rs.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq);
  at::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
  at::Tensor is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(is_medium, smoothed, scaled);
}

}  // namespace dotf
