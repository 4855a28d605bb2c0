#pragma once
// Preallocated key/value buffers for every layer plus a length. Rolling back speculation moves the
// length (O(1), nothing copied): rows past it are dead and get overwritten by the next write, as in
// gpt-fast's KVCache, flash-attention's cache_seqlens and llama.cpp's llama_memory_seq_rm.
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

 private:
  at::Tensor keys_, values_;
  int64_t num_layers_ = 0;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
};

}  // namespace dotf
