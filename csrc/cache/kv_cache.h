#pragma once
// Preallocated key/value buffers for every layer plus a length. Rolling back speculation moves the
// length (O(1), nothing copied): rows past it are dead and get overwritten by the next write, as in
// gpt-fast's KVCache, flash-attention's cache_seqlens and llama.cpp's llama_memory_seq_rm.
//
// Optionally it also holds the draft's int8 mirror (draft_kv="int8", ops/attention_int8.h): every
// exact row below the length, quantized. Forward passes write a mirror row whenever they write the
// exact row (full passes and draft passes alike), so the one length serves both: truncate moves it for
// both and copies nothing, and the rows a verify rewrote and kept are right in the mirror too.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf {

class KVCache {
 public:
  KVCache() = default;
  // Buffers are [layers, batch, capacity, kv_heads, head_dim]; batch is 1 (one sequence per call), and the leading
  // batch axis is there so that batched decoding adds per-sequence lengths, not a new layout.
  KVCache(int64_t num_layers, int64_t capacity, int64_t num_kv_heads, int64_t head_dim, at::ScalarType dtype,
          at::Device device);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t num_layers() const { return num_layers_; }
  bool defined() const { return keys_.defined(); }

  // This layer's slabs: [capacity, kv_heads, head_dim] views (no copy).
  at::Tensor keys(int64_t layer) const;
  at::Tensor values(int64_t layer) const;
  // The whole buffers: [layers, batch, capacity, kv_heads, head_dim].
  const at::Tensor& key_buffer() const { return keys_; }
  const at::Tensor& value_buffer() const { return values_; }

  // Claims rows [length, length + count) for the caller to write; throws when beyond capacity.
  void append(int64_t count);
  // Forgets rows [n, length): O(1), copies nothing. Requires 0 <= n <= length.
  void truncate(int64_t n);
  // Memory of both buffers, in bytes.
  int64_t nbytes() const;
  // Bytes one position takes in a cache of this shape (K and V of every layer), plus the int8 mirror's
  // (head_dim values and one float scale per KV head, K and V) when asked.
  static int64_t bytes_per_position(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim, at::ScalarType dtype,
                                    bool int8_mirror);

  // Allocates the int8 mirror on the cache's device and quantizes rows [0, length) into it; nothing if
  // it exists.
  void add_int8_mirror();
  bool has_int8_mirror() const { return int8_keys_.defined(); }
  // This layer's mirror: int8 values [KVH, capacity, D] (a head's rows contiguous, as the draft streams
  // them) and float32 scales [KVH, capacity], one per (position, KV head). Views, no copy.
  at::Tensor int8_keys(int64_t layer) const;
  at::Tensor int8_values(int64_t layer) const;
  at::Tensor key_scales(int64_t layer) const;
  at::Tensor value_scales(int64_t layer) const;
  // Quantizes rows [start, start + count) of this layer's exact buffers into the mirror (when it exists).
  // device_start: as for the ops (a CUDA graph replay's real start; start is then its bound).
  void write_int8_mirror(int64_t layer, int64_t start, int64_t count, const at::Tensor& device_start = at::Tensor());
  // Memory of the mirror, in bytes (0 without one).
  int64_t int8_mirror_nbytes() const;

 private:
  at::Tensor mirror_layer(const at::Tensor& buffer, int64_t layer) const;  // checks that the mirror exists

  at::Tensor keys_, values_;
  at::Tensor int8_keys_, int8_values_;      // [layers, KVH, capacity, D] int8
  at::Tensor key_scales_, value_scales_;    // [layers, KVH, capacity] float32
  int64_t num_layers_ = 0;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
};

}  // namespace dotf
