#pragma once
// Rotary position embedding of q and k (rotate-half convention, as in transformers' Llama/Qwen2),
// fused with writing k and v into the layer's KV-cache slab: one pass over the QKV projection.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf {

struct RopeQkvShape {
  int64_t tokens;        // T
  int64_t num_heads;     // H
  int64_t num_kv_heads;  // KVH
  int64_t head_dim;      // D
  int64_t start;         // position of the first token; token t sits at start + t
  // CUDA only: when set, the kernel reads the first token's position here (a device int64) and
  // `start` is only its upper bound. A CUDA graph captured once then replays at any position.
  const int64_t* device_start = nullptr;
};

// qkv: [T, (H + 2*KVH) * D] projection output, q then k then v
// rope_cos, rope_sin: [max_positions, D/2] tables in the model dtype
// q_out: [T, H, D] rotated queries
// k_cache, v_cache: [capacity, KVH, D] this layer's slab; rows start..start+T-1 are written
// device_start: optional [1] int64 on qkv's device holding the position of token 0, read by the
//   kernel (for CUDA graphs); `start` is then the largest value it may hold (bounds checks).
void rope_qkv_to_cache(const at::Tensor& qkv, const at::Tensor& rope_cos, const at::Tensor& rope_sin,
                       int64_t start, int64_t num_heads, int64_t num_kv_heads, at::Tensor& q_out,
                       at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& device_start = {});

// Raw-pointer CPU implementation, also the reference for the CUDA kernel.
// qkv: [T, (H + 2*KVH) * D]; cos, sin: [P, D/2]; q_out: [T, H, D]; k_cache, v_cache: [capacity, KVH, D]
// from row 0
template <typename scalar_t>
void rope_qkv_to_cache_cpu(const scalar_t* qkv, const scalar_t* cos, const scalar_t* sin, scalar_t* q_out,
                           scalar_t* k_cache, scalar_t* v_cache, const RopeQkvShape& shape);

}  // namespace dotf
