#include "cache/kv_cache.h"

#include "core/check.h"
#include "ops/attention_int8.h"

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

int64_t KVCache::bytes_per_position(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                                    at::ScalarType dtype, bool int8_mirror) {
  const int64_t row = head_dim * static_cast<int64_t>(c10::elementSize(dtype)) + (int8_mirror ? head_dim + 4 : 0);
  return num_layers * num_kv_heads * 2 * row;  // K and V
}

int64_t KVCache::nbytes() const {
  return keys_.defined() ? keys_.nbytes() + values_.nbytes() : 0;
}

void KVCache::add_int8_mirror() {
  DOTF_CHECK_ARG(defined(), "KVCache.add_int8_mirror: the cache has no buffers");
  if (has_int8_mirror()) return;
  const int64_t KVH = keys_.size(3), D = keys_.size(4);
  auto int8 = at::TensorOptions().dtype(at::kChar).device(keys_.device());
  auto fp32 = at::TensorOptions().dtype(at::kFloat).device(keys_.device());
  int8_keys_ = at::empty({num_layers_, KVH, capacity_, D}, int8);
  int8_values_ = at::empty({num_layers_, KVH, capacity_, D}, int8);
  key_scales_ = at::empty({num_layers_, KVH, capacity_}, fp32);
  value_scales_ = at::empty({num_layers_, KVH, capacity_}, fp32);
  for (int64_t l = 0; l < num_layers_; ++l) write_int8_mirror(l, 0, length_);
}

at::Tensor KVCache::mirror_layer(const at::Tensor& buffer, int64_t layer) const {
  DOTF_CHECK(has_int8_mirror() && layer >= 0 && layer < num_layers_, "KVCache: no int8 mirror of layer ", layer);
  return buffer.select(0, layer);
}

at::Tensor KVCache::int8_keys(int64_t layer) const { return mirror_layer(int8_keys_, layer); }
at::Tensor KVCache::int8_values(int64_t layer) const { return mirror_layer(int8_values_, layer); }
at::Tensor KVCache::key_scales(int64_t layer) const { return mirror_layer(key_scales_, layer); }
at::Tensor KVCache::value_scales(int64_t layer) const { return mirror_layer(value_scales_, layer); }

void KVCache::write_int8_mirror(int64_t layer, int64_t start, int64_t count, const at::Tensor& device_start) {
  if (!has_int8_mirror() || count == 0) return;
  at::Tensor kq = int8_keys(layer), vq = int8_values(layer), ks = key_scales(layer), vs = value_scales(layer);
  quantize_kv_rows(keys(layer), values(layer), start, count, kq, vq, ks, vs, device_start);
}

int64_t KVCache::int8_mirror_nbytes() const {
  if (!has_int8_mirror()) return 0;
  return int8_keys_.nbytes() + int8_values_.nbytes() + key_scales_.nbytes() + value_scales_.nbytes();
}

}  // namespace dotf
