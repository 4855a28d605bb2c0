#include "ops/rope.h"

#include "core/check.h"
#include "ops/cuda/entries.h"
#include "ops/dtype_dispatch.h"

#include <ATen/Parallel.h>

#include <cstring>

namespace dotf {

namespace {
// out = x * cos + rotate_half(x) * sin, each product rounded to the storage type as transformers does.
template <typename scalar_t>
inline void rotate_head(const scalar_t* x, const scalar_t* cos, const scalar_t* sin, scalar_t* out, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const scalar_t lo = x[i], hi = x[i + half];
    const scalar_t lo_cos = lo * cos[i], hi_sin = hi * sin[i];
    const scalar_t hi_cos = hi * cos[i], lo_sin = lo * sin[i];
    out[i] = static_cast<scalar_t>(lo_cos - hi_sin);
    out[i + half] = static_cast<scalar_t>(hi_cos + lo_sin);
  }
}
}  // namespace

template <typename scalar_t>
void rope_qkv_to_cache_cpu(const scalar_t* qkv, const scalar_t* cos, const scalar_t* sin, scalar_t* q_out,
                           scalar_t* k_cache, scalar_t* v_cache, const RopeQkvShape& s) {
  const int64_t D = s.head_dim, half = D / 2;
  const int64_t row = (s.num_heads + 2 * s.num_kv_heads) * D;
  const int64_t kv_row = s.num_kv_heads * D;
  at::parallel_for(0, s.tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t pos = s.start + t;
      const scalar_t* c = cos + pos * half;
      const scalar_t* sn = sin + pos * half;
      const scalar_t* src = qkv + t * row;
      for (int64_t h = 0; h < s.num_heads; ++h) rotate_head(src + h * D, c, sn, q_out + (t * s.num_heads + h) * D, half);
      const scalar_t* k = src + s.num_heads * D;
      for (int64_t h = 0; h < s.num_kv_heads; ++h) rotate_head(k + h * D, c, sn, k_cache + pos * kv_row + h * D, half);
      std::memcpy(v_cache + pos * kv_row, k + kv_row, kv_row * sizeof(scalar_t));
    }
  });
}

void rope_qkv_to_cache(const at::Tensor& qkv, const at::Tensor& rope_cos, const at::Tensor& rope_sin,
                       int64_t start, int64_t num_heads, int64_t num_kv_heads, at::Tensor& q_out,
                       at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& device_start) {
  DOTF_CHECK_DIM(qkv, 2, "qkv");
  DOTF_CHECK_DIM(k_cache, 3, "k_cache");
  RopeQkvShape shape{qkv.size(0), num_heads, num_kv_heads, k_cache.size(2), start};
  const int64_t D = shape.head_dim;
  DOTF_CHECK_SIZE(qkv, 1, (num_heads + 2 * num_kv_heads) * D, "qkv");
  DOTF_CHECK(start >= 0 && start + shape.tokens <= k_cache.size(0), "rope_qkv_to_cache: rows [", start, ", ",
             start + shape.tokens, ") exceed the cache capacity ", k_cache.size(0));
  DOTF_CHECK(start + shape.tokens <= rope_cos.size(0), "rope_qkv_to_cache: position ", start + shape.tokens - 1,
             " exceeds the rotary table (", rope_cos.size(0), " positions)");
  DOTF_CHECK(rope_cos.size(1) == D / 2 && rope_sin.sizes() == rope_cos.sizes(), "rotary tables must be [P, D/2]");
  DOTF_CHECK(q_out.numel() == shape.tokens * num_heads * D, "q_out must be [T, H, D]");
  DOTF_CHECK(qkv.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous() && q_out.is_contiguous(),
             "rope_qkv_to_cache: contiguous tensors expected");
  DOTF_CHECK(v_cache.sizes() == k_cache.sizes(), "v_cache must match k_cache");
  if (device_start.defined()) {
    check_device_start(device_start, qkv, "rope_qkv_to_cache");
    if (qkv.is_cuda()) {
      shape.device_start = device_start.data_ptr<int64_t>();
    } else {
      shape.start = read_device_start(device_start, start, "rope_qkv_to_cache");
    }
  }
  if (qkv.is_cuda()) return rope_qkv_to_cache_cuda(qkv, rope_cos, rope_sin, shape, q_out, k_cache, v_cache);
  DOTF_DISPATCH_FLOATING(qkv.scalar_type(), "rope_qkv_to_cache", [&] {
    rope_qkv_to_cache_cpu<scalar_t>(qkv.data_ptr<scalar_t>(), rope_cos.data_ptr<scalar_t>(),
                                    rope_sin.data_ptr<scalar_t>(), q_out.data_ptr<scalar_t>(),
                                    k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(), shape);
  });
}

}  // namespace dotf
