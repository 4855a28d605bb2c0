#include "ops/attention_int8.h"

#include "core/check.h"
#include "ops/attention.h"
#include "ops/cpu/attention_avx2.h"
#include "ops/cuda/entries.h"
#include "ops/dtype_dispatch.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace dotf {

namespace {

void check_mirror(const at::Tensor& k_q, const at::Tensor& v_q, const at::Tensor& k_scale,
                  const at::Tensor& v_scale) {
  DOTF_CHECK_DIM(k_q, 3, "k_q");
  DOTF_CHECK_DTYPE(k_q, at::kChar, "k_q");
  DOTF_CHECK_DTYPE(k_scale, at::kFloat, "k_scale");
  DOTF_CHECK(v_q.sizes() == k_q.sizes() && v_q.scalar_type() == at::kChar, "v_q must match k_q");
  DOTF_CHECK(k_scale.dim() == 2 && k_scale.size(0) == k_q.size(0) && k_scale.size(1) == k_q.size(1) &&
                 v_scale.sizes() == k_scale.sizes() && v_scale.scalar_type() == at::kFloat,
             "k_scale, v_scale must be [KVH, capacity] float32");
  DOTF_CHECK(k_q.is_contiguous() && v_q.is_contiguous() && k_scale.is_contiguous() && v_scale.is_contiguous(),
             "the int8 mirror must be contiguous");
  DOTF_CHECK_ARG(v_q.device() == k_q.device() && k_scale.device() == k_q.device() && v_scale.device() == k_q.device(),
                 "the int8 mirror's tensors must share one device");
}

}  // namespace

void quantize_kv_rows(const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start, int64_t count,
                      at::Tensor& k_q, at::Tensor& v_q, at::Tensor& k_scale, at::Tensor& v_scale,
                      const at::Tensor& device_start) {
  DOTF_CHECK_DIM(k_cache, 3, "k_cache");
  DOTF_CHECK(v_cache.sizes() == k_cache.sizes() && v_cache.strides() == k_cache.strides(), "v_cache must match k_cache");
  check_mirror(k_q, v_q, k_scale, v_scale);
  const int64_t capacity = k_cache.size(0), KVH = k_cache.size(1), D = k_cache.size(2);
  DOTF_CHECK(k_q.size(0) == KVH && k_q.size(1) == capacity && k_q.size(2) == D, "k_q must be [KVH=", KVH,
             ", capacity=", capacity, ", D=", D, "], got ", k_q.sizes());
  DOTF_CHECK(start >= 0 && count >= 0 && start + count <= capacity, "quantize_kv_rows: rows [", start, ", ",
             start + count, ") exceed the capacity ", capacity);
  DOTF_CHECK_ARG(k_q.device() == k_cache.device(), "quantize_kv_rows: the mirror is on ", k_q.device(),
                 ", the cache on ", k_cache.device());
  if (device_start.defined()) check_device_start(device_start, k_cache, "quantize_kv_rows");
  if (k_cache.is_cuda()) return quantize_kv_rows_cuda(k_cache, v_cache, start, count, device_start, k_q, v_q, k_scale,
                                                      v_scale);
  if (device_start.defined()) start = read_device_start(device_start, start, "quantize_kv_rows");
  DOTF_CHECK(k_cache.stride(2) == 1, "quantize_kv_rows: slabs with contiguous rows");
  const int64_t row = k_cache.stride(0), head = k_cache.stride(1);
  DOTF_DISPATCH_FLOATING(k_cache.scalar_type(), "quantize_kv_rows", [&] {
    const scalar_t* k = k_cache.const_data_ptr<scalar_t>();
    const scalar_t* v = v_cache.const_data_ptr<scalar_t>();
    int8_t* kq = k_q.mutable_data_ptr<int8_t>();
    int8_t* vq = v_q.mutable_data_ptr<int8_t>();
    float* ks = k_scale.mutable_data_ptr<float>();
    float* vs = v_scale.mutable_data_ptr<float>();
    at::parallel_for(0, count, 64, [&](int64_t begin, int64_t end) {
      for (int64_t s = start + begin; s < start + end; ++s) {
        for (int64_t h = 0; h < KVH; ++h) {
          quantize_int8_row(k + s * row + h * head, D, kq + (h * capacity + s) * D, ks + h * capacity + s);
          quantize_int8_row(v + s * row + h * head, D, vq + (h * capacity + s) * D, vs + h * capacity + s);
        }
      }
    });
  });
}

at::Tensor int8_attention_with_cache_reference(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                               const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                               double scale, int64_t window) {
  const int64_t S = start + q.size(0);
  auto dequantize = [&](const at::Tensor& x, const at::Tensor& s) {  // [KVH, capacity, D] -> [S, KVH, D]
    const at::ScalarType compute = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor rows = x.narrow(1, 0, S).to(compute) * s.narrow(1, 0, S).to(compute).unsqueeze(-1);
    return rows.to(q.scalar_type()).permute({1, 0, 2}).contiguous();
  };
  return attention_with_cache_reference(q, dequantize(k_q, k_scale), dequantize(v_q, v_scale), start, scale, window);
}

at::Tensor int8_attention_with_cache(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                     const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                     double scale, int64_t window, const at::Tensor& device_start) {
  DOTF_CHECK_DIM(q, 3, "q");
  DOTF_CHECK_ARG(window >= 0, "attention window must be >= 0, got ", window);
  check_mirror(k_q, v_q, k_scale, v_scale);
  DOTF_CHECK_ARG(q.device() == k_q.device(), "int8_attention_with_cache: q is on ", q.device(), ", the mirror on ",
                 k_q.device());
  DOTF_CHECK(q.size(2) == k_q.size(2), "q head_dim ", q.size(2), " != mirror head_dim ", k_q.size(2));
  DOTF_CHECK(q.size(1) % k_q.size(0) == 0, "query heads must be a multiple of KV heads");
  DOTF_CHECK(start >= 0 && start + q.size(0) <= k_q.size(1), "int8 attention: rows [0, ", start + q.size(0),
             ") exceed the mirror capacity ", k_q.size(1));
  if (device_start.defined()) check_device_start(device_start, q, "int8_attention_with_cache");
  if (q.is_cuda())
    return int8_attention_with_cache_cuda(q, k_q, v_q, k_scale, v_scale, start, scale, window, device_start);
  if (device_start.defined()) start = read_device_start(device_start, start, "int8_attention_with_cache");
  if (q.size(0) <= kFusedAttentionMaxRows && avx2::int8_attention_supports(q))
    return avx2::int8_attention_with_cache(q, k_q, v_q, k_scale, v_scale, start, scale, window);
  return int8_attention_with_cache_reference(q, k_q, v_q, k_scale, v_scale, start, scale, window);
}

}  // namespace dotf
