#include "cache/kv_cache.h"

#include "core/check.h"

#include <ATen/ops/empty.h>

namespace dotf {

KVCache::KVCache(int64_t num_layers, int64_t capacity, int64_t num_kv_heads, int64_t head_dim,
                 at::ScalarType dtype, at::Device device)
    : num_layers_(num_layers), capacity_(capacity) {
  DOTF_CHECK_ARG(num_layers > 0 && capacity > 0 && num_kv_heads > 0 && head_dim > 0,
                 "KVCache dimensions must be positive (layers ", num_layers, ", capacity ", capacity, ")");
  // Uninitialised on purpose: only rows below the length are ever read.
  auto opts = at::TensorOptions().dtype(dtype).device(device);
  keys_ = at::empty({num_layers, 1, capacity, num_kv_heads, head_dim}, opts);
  values_ = at::empty({num_layers, 1, capacity, num_kv_heads, head_dim}, opts);
}

at::Tensor KVCache::keys(int64_t layer) const {
  DOTF_CHECK(layer >= 0 && layer < num_layers_, "KVCache: layer ", layer, " out of range [0, ", num_layers_, ")");
  return keys_.select(0, layer).select(0, 0);
}

at::Tensor KVCache::values(int64_t layer) const {
  DOTF_CHECK(layer >= 0 && layer < num_layers_, "KVCache: layer ", layer, " out of range [0, ", num_layers_, ")");
  return values_.select(0, layer).select(0, 0);
}

void KVCache::append(int64_t count) {
  DOTF_CHECK_ARG(count >= 0, "KVCache.append: count must be >= 0, got ", count);
  DOTF_CHECK_ARG(length_ + count <= capacity_, "KVCache.append: ", length_, " + ", count,
                 " tokens exceed the cache capacity ", capacity_);
  length_ += count;
}

void KVCache::truncate(int64_t n) {
  DOTF_CHECK_ARG(n >= 0 && n <= length_, "KVCache.truncate: length must be in [0, ", length_, "], got ", n);
  length_ = n;
}

int64_t KVCache::nbytes() const {
  return keys_.defined() ? keys_.nbytes() + values_.nbytes() : 0;
}

}  // namespace dotf
