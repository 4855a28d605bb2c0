#pragma once
// Launchers of dotf's CUDA kernels: raw device pointers, sizes and a stream, no torch types. Each
// is defined in ops/cuda/<op>.cu for T = float, c10::Half and c10::BFloat16 and called by the thin
// tensor wrapper ops/cuda/<op>.cpp. Launches are asynchronous on `stream`; a launch error throws.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dotf::cuda {

// h: [rows, cols] residual stream, updated in place when delta is given; delta: [rows, cols] or
// nullptr; weight: [cols]; normed: [rows, cols]; cos: [rows] float32 or nullptr (needs delta).
template <typename T>
void launch_add_rmsnorm_cossim(T* h, const T* delta, const T* weight, T* normed, float* cos, int64_t rows,
                               int64_t cols, float eps, cudaStream_t stream);

// qkv: [tokens, (H + 2*KVH) * D]; cos, sin: [P, D/2]; q_out: [tokens, H, D];
// k_cache, v_cache: [capacity, KVH, D] from row 0; rows start..start+tokens-1 are written, start read
// from device_start (a device int64) when it is not null.
template <typename T>
void launch_rope_qkv_to_cache(const T* qkv, const T* cos, const T* sin, T* q_out, T* k_cache, T* v_cache,
                              int64_t tokens, int num_heads, int num_kv_heads, int head_dim, int64_t start,
                              const int64_t* device_start, cudaStream_t stream);

// Attention of T queries over the KV cache (ops/cuda/attention.cu).
struct AttentionArgs {
  int tokens;        // T
  int heads;         // H
  int kv_heads;      // KVH
  int head_dim;      // D
  int64_t start;     // position of query 0 (an upper bound of it when device_start is set)
  const int64_t* device_start;  // when set, the position of query 0 is read here (CUDA graph replays)
  float scale;
  int64_t chunk;     // keys per split
  int splits;
};
// Sets a.chunk and a.splits for a GPU with sm_count multiprocessors: enough blocks to fill it twice
// over, at least one tile per warp of keys per split. tokens, heads and kv_heads must be set.
void choose_attention_splits(AttentionArgs& a, int sm_count);
// q: [T, H, D]; k, v: [capacity, KVH, D] (only rows < start + T are read), rows 4-byte aligned;
// out: [T, H * D]; part_o: [splits, T * H, D] float32 and part_lse: [splits, T * H] float32 when
// a.splits > 1, else nullptr. smem_optin: the device's opt-in shared memory per block, in bytes.
template <typename T>
void launch_attention(const T* q, const T* k, const T* v, T* out, float* part_o, float* part_lse,
                      const AttentionArgs& a, size_t smem_optin, cudaStream_t stream);

// Merges the splits' partial outputs: part_o: [splits, rows, D] float32, part_lse: [splits, rows]
// float32 (-inf: the split saw no key of the row) -> out: [rows, D].
template <typename T>
void launch_attention_combine(const float* part_o, const float* part_lse, T* out, int64_t rows, int D, int splits,
                              cudaStream_t stream);

// Attention of T queries over the draft's int8 KV mirror (ops/cuda/attention_int8.cu; the CPU
// kernel and the reference are in ops/attention_int8.h), every key or a window: the first `sinks`
// keys and the last `window` ones of each query.
struct Int8AttentionArgs {
  AttentionArgs base;  // tokens, heads, kv_heads, head_dim, start, device_start, scale; chunk and splits
                       // count keys of a block's compact range (sinks, then its window), not positions
  int64_t capacity;    // mirror rows per KV head
  int64_t window;      // 0: every key
  int64_t sinks;
};
// Sets a.base.chunk and a.base.splits as choose_attention_splits does, over the most keys a block sees.
void choose_int8_attention_splits(Int8AttentionArgs& a, int sm_count);
// q: [T, H, D]; k_q, v_q: [KVH, capacity, D] int8; k_scale, v_scale: [KVH, capacity] float32;
// out: [T, H * D]; part_o, part_lse: as launch_attention. D <= 128 and a multiple of 16.
template <typename T>
void launch_int8_attention(const T* q, const int8_t* k_q, const int8_t* v_q, const float* k_scale,
                           const float* v_scale, T* out, float* part_o, float* part_lse, const Int8AttentionArgs& a,
                           cudaStream_t stream);
// Quantizes rows [start, start + count) of the exact K and V ([capacity, KVH, D], rows contiguous) into
// the mirror: per (row, KV head) scale = max|x| / 127 and q = round(x / scale); a row with a non-finite
// value gets scale NaN and zeros. start is read from device_start when it is not null.
template <typename T>
void launch_quantize_kv_rows(const T* k, const T* v, int64_t kv_heads, int head_dim, int64_t capacity, int64_t start,
                             const int64_t* device_start, int64_t count, int8_t* k_q, int8_t* v_q, float* k_scale,
                             float* v_scale, cudaStream_t stream);

// logits: [rows, vocab]; ids: [rows] int64; probs: [rows] float32 (0 when with_prob is false).
template <typename T>
void launch_argmax_top1(const T* logits, int64_t rows, int vocab, int64_t* ids, float* probs, bool with_prob,
                        cudaStream_t stream);

// drafts: [k] (nullptr when k is 0); target: [k+1]; out: [2] = (accepted, bonus or -1).
void launch_greedy_accept(const int64_t* drafts, const int64_t* target, int64_t k, int64_t* out,
                          cudaStream_t stream);

// Sampling (ops/sample.h has the semantics): the warp in ops/cuda/sample_warp.cu, the draws in
// ops/cuda/sample.cu. The warp's arguments, as the CPU reference computes them from SamplingParams.
struct WarperArgs {
  float inv_temperature;  // float(1 / temperature)
  int64_t top_k;          // 0: off
  double top_p;           // 1: off
  float min_p;            // float(min_p); 0: off
};
// logits: [rows, vocab]; probs: [rows, vocab] float32 output: the warped softmax, 0 for removed tokens. A
// row holding NaN or +inf, or no finite logit, is written as NaN (the draws below then return -1).
template <typename T>
void launch_warped_probabilities(const T* logits, int64_t rows, int64_t vocab, const WarperArgs& args, float* probs,
                                 cudaStream_t stream);
// probs: [rows, vocab] float32 weights >= 0; uniforms: [rows]; ids: [rows] output: the first token whose
// cumulative weight exceeds u * (row sum); -1 for a row with no positive weight or a NaN.
void launch_sample_rows(const float* probs, const double* uniforms, int64_t rows, int64_t vocab, int64_t* ids,
                        cudaStream_t stream);
// p: [k+1, vocab]; q: [k, vocab] (rows of lookup drafts not read; nullptr when k is 0); drafts: [k];
// lookup: [k]; uniforms: [k+1]; out: [2] = (accepted drafts, next token; -1 for a NaN row or a draft
// outside the vocabulary); ratios: [k] = min(1, p/q) of the drafts tested, NaN past them.
void launch_speculative_accept(const float* p, const float* q, const int64_t* drafts, const bool* lookup,
                               const double* uniforms, int64_t k, int64_t vocab, int64_t* out, double* ratios,
                               cudaStream_t stream);

// gate_up: [rows, 2I]; out: [rows, I].
template <typename T>
void launch_silu_mul(const T* gate_up, T* out, int64_t rows, int64_t I, cudaStream_t stream);

// Weight-only quantized y = x (q * scale)^T + bias for small M (ops/cuda/quant_linear.cu); the
// layouts are QuantizedWeight's (ops/quant_linear.h).
struct QuantLinearArgs {
  int64_t M, N, K;  // x: [M, K], out: [M, N]
  int bits;         // 8: qweight [N, Kp] int8, scale [N] float32;
                    // 4: qweight [N, Kp/2] uint8 (q + 8, even k low), scale [N, Kp/group] float16
  int64_t Kp;       // K padded (int8: to 16, int4: to the group)
  int64_t group;    // int4: inputs per scale, a multiple of 32
  int splits;       // blocks along K per output block; > 1 writes float32 partial sums, reduced after
};
// Rows of x one kernel pass handles; larger M runs ceil(M / kQuantMaxRows) passes.
inline constexpr int64_t kQuantMaxRows = 16;
// Sets a.splits for a GPU with sm_count multiprocessors: enough blocks to fill it when N is small.
void choose_quant_linear_splits(QuantLinearArgs& a, int sm_count);
// x: [M, K], rows 16-byte aligned (K * sizeof(T) a multiple of 16); qweight rows 16-byte aligned;
// bias: [N] or nullptr; out: [M, N]; part: [splits, min(M, kQuantMaxRows), N] float32 when
// a.splits > 1, else nullptr.
template <typename T>
void launch_quant_linear(const T* x, const void* qweight, const void* scale, const T* bias, T* out, float* part,
                         const QuantLinearArgs& a, cudaStream_t stream);

// Whether p is a multiple of `bytes` (the kernels' vector and staging paths need aligned rows).
inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace dotf::cuda
