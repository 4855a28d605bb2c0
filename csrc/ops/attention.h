#pragma once
// Causal grouped-query attention of T new queries over a KV cache (decode T=1, draft, verify T=k+1,
// prefill T=prompt). Query t sits at position start + t and sees cached rows [0, start + t].
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf {

// A draft's attention window (option draft_window): query row at position p sees the first
// kAttentionSinks keys and keys (p - window, p], not the keys between, so a draft step's attention
// reads a bounded number of rows however long the context grows. The first keys stay because models
// park attention mass on them (StreamingLLM's attention sinks, Xiao et al. 2023); the full model never
// attends through a window. window 0: every key up to p.
constexpr int64_t kAttentionSinks = 4;

// q: [T, H, D] rotated queries at positions start..start+T-1
// k_cache, v_cache: [capacity, KVH, D]; rows [0, start + T) are valid
// device_start: optional [1] int64 on q's device holding the position of query 0, read by the
//   kernel (CUDA graph replays); `start` is then the largest value it may hold and sizes the launch.
// window: see kAttentionSinks (CPU only here: CUDA refuses a window > 0; the int8 mirror's CUDA kernel,
//   ops/attention_int8.h, takes one)
// returns: [T, H * D]
at::Tensor attention_with_cache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t start, double scale, const at::Tensor& device_start = {},
                                int64_t window = 0);

// The CPU path: the fused AVX2 kernel (ops/cpu/attention_avx2.h) when fused_attention_supports the
// input; a prefill (start 0, finite new V rows, not float64, no window) through torch's causal
// attention; else the reference. Same arguments as attention_with_cache, without device_start.
at::Tensor attention_with_cache_cpu(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                    int64_t start, double scale, int64_t window = 0);

// The reference (ATen ops, softmax in float32 as transformers does): any dtype (float64 included)
// and any T; the fused CPU kernel's and the CUDA kernel's reference. Same arguments as
// attention_with_cache_cpu.
at::Tensor attention_with_cache_reference(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                          int64_t start, double scale, int64_t window = 0);

// The fused CPU kernel serves T <= kFusedAttentionMaxRows (decode, draft and verify; prefill goes to
// torch's attention): float32/bfloat16/float16 with fp32 arithmetic, head_dim a multiple of 8, on
// x86-64 CPUs with AVX2. Batch invariant: each row's result is independent of T.
// q: [T, H, D]; k_cache: [capacity, KVH, D]
constexpr int64_t kFusedAttentionMaxRows = 64;
bool fused_attention_supports(const at::Tensor& q, const at::Tensor& k_cache);

}  // namespace dotf
