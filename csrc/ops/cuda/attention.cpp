// attention_with_cache_cuda: the tensor wrapper of CUDA attention over the KV cache
// (ops/cuda/attention.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace dotf {

at::Tensor attention_with_cache_cuda(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     int64_t start, double scale, const at::Tensor& device_start) {
  // Ranks, shapes and bounds are checked by attention_with_cache; devices, dtypes and limits here.
  DOTF_CHECK_SAME_DEVICE(k_cache, q_in, "k_cache");
  DOTF_CHECK_SAME_DEVICE(v_cache, q_in, "v_cache");
  DOTF_CHECK_SAME_DTYPE(k_cache, q_in, "k_cache");
  DOTF_CHECK_SAME_DTYPE(v_cache, q_in, "v_cache");
  DOTF_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "attention_with_cache: KV caches must be contiguous");
  const int64_t T = q_in.size(0), H = q_in.size(1), D = q_in.size(2), KVH = k_cache.size(1);
  DOTF_CHECK_ARG(D % 2 == 0 && D <= 128, "attention_with_cache on CUDA supports even head_dim <= 128, got ", D);
  DOTF_CHECK_ARG(T * H <= std::numeric_limits<int32_t>::max() && KVH <= 65535, "attention_with_cache: too many rows");
  const c10::cuda::CUDAGuard guard(q_in.device());
  at::Tensor q = q_in.contiguous();
  at::Tensor out = at::empty({T, H * D}, q.options());
  if (T == 0 || H == 0) return out;
  // The word-wise K staging needs 4-byte aligned rows (always true for allocator-made tensors).
  at::Tensor k = cuda::aligned_to(k_cache.data_ptr(), 4) ? k_cache : k_cache.clone();
  at::Tensor v = cuda::aligned_to(v_cache.data_ptr(), 4) ? v_cache : v_cache.clone();

  cuda::AttentionArgs a{};
  a.tokens = static_cast<int>(T);
  a.heads = static_cast<int>(H);
  a.kv_heads = static_cast<int>(KVH);
  a.head_dim = static_cast<int>(D);
  a.start = start;
  a.device_start = device_start.defined() ? device_start.data_ptr<int64_t>() : nullptr;
  a.scale = static_cast<float>(scale);
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  cuda::choose_attention_splits(a, prop->multiProcessorCount);
  DOTF_CHECK_ARG(a.splits <= 65535, "attention_with_cache: cache too long for the split grid");

  at::Tensor part_o, part_lse;
  if (a.splits > 1) {
    part_o = at::empty({a.splits, T * H, D}, q.options().dtype(at::kFloat));
    part_lse = at::empty({a.splits, T * H}, q.options().dtype(at::kFloat));
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(q.scalar_type(), "attention_with_cache", [&](auto tag) {
    using T_ = decltype(tag);
    cuda::launch_attention<T_>(q.data_ptr<T_>(), k.data_ptr<T_>(), v.data_ptr<T_>(), out.data_ptr<T_>(),
                               a.splits > 1 ? part_o.data_ptr<float>() : nullptr,
                               a.splits > 1 ? part_lse.data_ptr<float>() : nullptr, a,
                               prop->sharedMemPerBlockOptin, stream);
  });
  return out;
}

}  // namespace dotf
