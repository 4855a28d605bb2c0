#pragma once
// The ops' CUDA entry points: the one place where an op's entry (ops/<op>.cpp) hands CUDA tensors
// over, under `if (x.is_cuda())`. Declared for every build. CUDA builds define them in the thin
// wrappers ops/cuda/<op>.cpp (device guard, current stream, launch of the kernels in
// ops/cuda/<op>.cu); CPU-only builds define them all in ops/cuda_entries_cpu_only.cpp, where each
// throws "dotf was built without CUDA kernels". So no op needs an #ifdef.
//
// The op entries check ranks, shapes and contiguity before the call; the wrappers check devices,
// dtypes and the kernels' limits.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace dotf {

struct QuantizedWeight;  // ops/quant_linear.h
struct RopeQkvShape;     // ops/rope.h
struct SamplingParams;   // ops/sample.h

// h: [T, C], updated in place when delta is given; delta: [T, C] or undefined; weight: [C];
// normed: [T, C] output; cos: [T] float32 output or undefined. As add_rmsnorm_cossim (ops/rmsnorm.h).
void add_rmsnorm_cossim_cuda(at::Tensor& h, const at::Tensor& delta, const at::Tensor& weight, double eps,
                             at::Tensor& normed, const at::Tensor& cos);

// qkv: [T, (H + 2*KVH) * D]; rope_cos, rope_sin: [P, D/2]; q_out: [T, H, D];
// k_cache, v_cache: [capacity, KVH, D]. As rope_qkv_to_cache (ops/rope.h); shape.device_start may be set.
void rope_qkv_to_cache_cuda(const at::Tensor& qkv, const at::Tensor& rope_cos, const at::Tensor& rope_sin,
                            const RopeQkvShape& shape, at::Tensor& q_out, at::Tensor& k_cache, at::Tensor& v_cache);

// q: [T, H, D]; k_cache, v_cache: [capacity, KVH, D]; device_start: [1] int64 or undefined
// -> [T, H * D]. As attention_with_cache (ops/attention.h).
at::Tensor attention_with_cache_cuda(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     int64_t start, double scale, const at::Tensor& device_start);

// q: [T, H, D]; k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32 (all
// contiguous); device_start: [1] int64 or undefined -> [T, H * D]. As int8_attention_with_cache
// (ops/attention_int8.h), window included.
at::Tensor int8_attention_with_cache_cuda(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                          const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                          double scale, int64_t window, const at::Tensor& device_start);

// k_cache, v_cache: [capacity, KVH, D] contiguous; the mirror as above. Rows [start, start + count), start
// read from device_start when defined. As quantize_kv_rows (ops/attention_int8.h).
void quantize_kv_rows_cuda(const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start, int64_t count,
                           const at::Tensor& device_start, at::Tensor& k_q, at::Tensor& v_q, at::Tensor& k_scale,
                           at::Tensor& v_scale);

// logits: contiguous [T, V], V > 0; ids: [T] int64 and probs: [T] float32 outputs. As argmax_top1
// (ops/sampling.h).
void argmax_top1_cuda(const at::Tensor& logits, at::Tensor& ids, at::Tensor& probs, bool with_prob);

// drafts: contiguous [k] int64; target: contiguous [k+1] int64; out: [2] int64 output. As
// greedy_accept (ops/accept.h).
void greedy_accept_cuda(const at::Tensor& drafts, const at::Tensor& target, at::Tensor& out);

// logits: contiguous [T, V], V > 0, float32/float16/bfloat16 -> [T, V] float32. As warped_probabilities
// (ops/sample.h), except that a bad row (NaN or +inf, or no finite logit) is not raised here, which would
// need a host read: it comes back as NaN, and a draw from it (sample_rows_cuda, speculative_accept_cuda)
// returns token -1, which the caller reports (SamplingAcceptance raises "non-finite logits").
at::Tensor warped_probabilities_cuda(const at::Tensor& logits, const SamplingParams& params);

// probs: contiguous [T, V] float32; uniforms: contiguous [T] float64 -> [T] int64. As sample_rows
// (ops/sample.h); -1 for a row with no positive weight or a NaN.
at::Tensor sample_rows_cuda(const at::Tensor& probs, const at::Tensor& uniforms);

// p: contiguous [k+1, V] float32; q: contiguous [k, V] float32; drafts: contiguous [k] int64; lookup:
// contiguous [k] bool; uniforms: contiguous [k+1] float64 -> ([2] int64, [k] float64). As
// speculative_accept (ops/sample.h), except that a draft outside the vocabulary or a NaN row gives next
// token -1 instead of an error (checking it would need a host read).
std::pair<at::Tensor, at::Tensor> speculative_accept_cuda(const at::Tensor& p, const at::Tensor& q,
                                                          const at::Tensor& drafts, const at::Tensor& lookup,
                                                          const at::Tensor& uniforms);

// gate_up: contiguous [T, 2I]; out: [T, I] of its dtype. As silu_mul (ops/activation.h).
void silu_mul_cuda(const at::Tensor& gate_up, at::Tensor& out);

// x: contiguous [M, K]; w: checked by quant_linear; bias: contiguous [N] or undefined; out: [M, N] of
// x's dtype. As quant_linear (ops/quant_linear.h).
void quant_linear_cuda(const at::Tensor& x, const QuantizedWeight& w, const at::Tensor& bias, at::Tensor& out);

}  // namespace dotf
