// quant_linear_cuda: the tensor wrapper of the weight-only quantized kernels (ops/cuda/quant_linear.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"
#include "ops/quant_linear.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

namespace dotf {

void quant_linear_cuda(const at::Tensor& x, const QuantizedWeight& w, const at::Tensor& bias, at::Tensor& out) {
  // quant_linear checked ranks, shapes, the weight's layout and that x, bias and the weight share a
  // device; dtypes, contiguity and alignment here.
  const int64_t M = x.size(0), N = w.out_features(), K = x.size(1);
  DOTF_CHECK_SAME_DEVICE(out, x, "out");
  DOTF_CHECK_SAME_DTYPE(out, x, "out");
  if (bias.defined()) DOTF_CHECK_SAME_DTYPE(bias, x, "bias");
  DOTF_CHECK(x.is_contiguous() && out.is_contiguous() && w.qweight.is_contiguous() && w.scale.is_contiguous() &&
                 (!bias.defined() || bias.is_contiguous()),
             "quant_linear: contiguous tensors expected");
  DOTF_CHECK_ARG(K * static_cast<int64_t>(x.element_size()) % 16 == 0 && cuda::aligned_to(x.data_ptr(), 16),
                 "quant_linear on CUDA: rows of x [M, K] must be 16-byte aligned (K a multiple of ",
                 16 / x.element_size(), " for ", x.scalar_type(), "), got K = ", K);
  DOTF_CHECK_ARG(cuda::aligned_to(w.qweight.data_ptr(), 16), "quant_linear on CUDA: qweight must be 16-byte aligned");
  if (M == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::QuantLinearArgs a{M, N, K, w.bits, w.padded_in_features(), w.group, 1};
  cuda::choose_quant_linear_splits(a, at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  // Partial sums of split K: [splits, rows per pass, N] float32 (from the caching allocator, so a
  // CUDA graph capture gets it from its pool).
  at::Tensor part;
  if (a.splits > 1)
    part = at::empty({a.splits, std::min(M, cuda::kQuantMaxRows), N}, x.options().dtype(at::kFloat));
  cuda::dispatch_float_types(x.scalar_type(), "quant_linear", [&](auto tag) {
    using T = decltype(tag);
    cuda::launch_quant_linear<T>(x.data_ptr<T>(), w.qweight.data_ptr(), w.scale.data_ptr(),
                                 bias.defined() ? bias.data_ptr<T>() : nullptr, out.data_ptr<T>(),
                                 part.defined() ? part.data_ptr<float>() : nullptr, a, stream);
  });
}

}  // namespace dotf
