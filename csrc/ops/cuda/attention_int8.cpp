// The tensor wrappers of the int8 KV mirror's CUDA kernels (ops/cuda/attention_int8.cu).
#include "ops/cuda/entries.h"

#include "ops/attention.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace dotf {

at::Tensor int8_attention_with_cache_cuda(const at::Tensor& q_in, const at::Tensor& k_q, const at::Tensor& v_q,
                                          const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                          double scale, int64_t window, const at::Tensor& device_start) {
  // Ranks, shapes, dtypes of the mirror and bounds are checked by int8_attention_with_cache.
  DOTF_CHECK_SAME_DEVICE(k_q, q_in, "k_q");
  DOTF_CHECK_SAME_DEVICE(v_q, q_in, "v_q");
  DOTF_CHECK_SAME_DEVICE(k_scale, q_in, "k_scale");
  DOTF_CHECK_SAME_DEVICE(v_scale, q_in, "v_scale");
  const int64_t T = q_in.size(0), H = q_in.size(1), D = q_in.size(2), KVH = k_q.size(0);
  DOTF_CHECK_ARG(D % 16 == 0 && D <= 128, "int8 attention on CUDA supports head_dim a multiple of 16 up to 128, got ",
                 D);
  DOTF_CHECK_ARG(T * H <= std::numeric_limits<int32_t>::max() && KVH <= 65535, "int8 attention: too many rows");
  const c10::cuda::CUDAGuard guard(q_in.device());
  at::Tensor q = q_in.contiguous();
  at::Tensor out = at::empty({T, H * D}, q.options());
  if (T == 0 || H == 0) return out;

  cuda::Int8AttentionArgs a{};
  a.base.tokens = static_cast<int>(T);
  a.base.heads = static_cast<int>(H);
  a.base.kv_heads = static_cast<int>(KVH);
  a.base.head_dim = static_cast<int>(D);
  a.base.start = start;
  a.base.device_start = device_start.defined() ? device_start.data_ptr<int64_t>() : nullptr;
  a.base.scale = static_cast<float>(scale);
  a.capacity = k_q.size(1);
  a.window = window;
  a.sinks = kAttentionSinks;
  cuda::choose_int8_attention_splits(a, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  DOTF_CHECK_ARG(a.base.splits <= 65535, "int8 attention: cache too long for the split grid");

  at::Tensor part_o, part_lse;
  if (a.base.splits > 1) {
    part_o = at::empty({a.base.splits, T * H, D}, q.options().dtype(at::kFloat));
    part_lse = at::empty({a.base.splits, T * H}, q.options().dtype(at::kFloat));
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(q.scalar_type(), "int8_attention_with_cache", [&](auto tag) {
    using T_ = decltype(tag);
    cuda::launch_int8_attention<T_>(q.data_ptr<T_>(), k_q.data_ptr<int8_t>(), v_q.data_ptr<int8_t>(),
                                    k_scale.data_ptr<float>(), v_scale.data_ptr<float>(), out.data_ptr<T_>(),
                                    a.base.splits > 1 ? part_o.data_ptr<float>() : nullptr,
                                    a.base.splits > 1 ? part_lse.data_ptr<float>() : nullptr, a, stream);
  });
  return out;
}

void quantize_kv_rows_cuda(const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start, int64_t count,
                           const at::Tensor& device_start, at::Tensor& k_q, at::Tensor& v_q, at::Tensor& k_scale,
                           at::Tensor& v_scale) {
  DOTF_CHECK_SAME_DEVICE(k_q, k_cache, "k_q");
  DOTF_CHECK_SAME_DEVICE(v_q, k_cache, "v_q");
  DOTF_CHECK_SAME_DEVICE(k_scale, k_cache, "k_scale");
  DOTF_CHECK_SAME_DEVICE(v_scale, k_cache, "v_scale");
  DOTF_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "quantize_kv_rows on CUDA: contiguous slabs");
  DOTF_CHECK_ARG(count <= 2147483647 && k_cache.size(1) <= 65535, "quantize_kv_rows: too many rows");
  const c10::cuda::CUDAGuard guard(k_cache.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t* ds = device_start.defined() ? device_start.data_ptr<int64_t>() : nullptr;
  cuda::dispatch_float_types(k_cache.scalar_type(), "quantize_kv_rows", [&](auto tag) {
    using T_ = decltype(tag);
    cuda::launch_quantize_kv_rows<T_>(k_cache.data_ptr<T_>(), v_cache.data_ptr<T_>(), k_cache.size(1),
                                      static_cast<int>(k_cache.size(2)), k_q.size(1), start, ds, count,
                                      k_q.data_ptr<int8_t>(), v_q.data_ptr<int8_t>(), k_scale.data_ptr<float>(),
                                      v_scale.data_ptr<float>(), stream);
  });
}

}  // namespace dotf
