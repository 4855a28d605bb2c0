// add_rmsnorm_cossim_cuda: the tensor wrapper of the residual add + RMSNorm + cosine kernel
// (ops/cuda/rmsnorm.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace dotf {

void add_rmsnorm_cossim_cuda(at::Tensor& h, const at::Tensor& delta, const at::Tensor& weight, double eps,
                             at::Tensor& normed, const at::Tensor& cos) {
  // Shapes, contiguity and cos's dtype are checked by add_rmsnorm_cossim; devices and dtypes here.
  DOTF_CHECK_SAME_DEVICE(weight, h, "weight");
  DOTF_CHECK_SAME_DEVICE(normed, h, "normed");
  DOTF_CHECK_SAME_DTYPE(weight, h, "weight");
  if (delta.defined()) {
    DOTF_CHECK_SAME_DEVICE(delta, h, "delta");
    DOTF_CHECK_SAME_DTYPE(delta, h, "delta");
  }
  if (cos.defined()) DOTF_CHECK_SAME_DEVICE(cos, h, "cos");
  DOTF_CHECK_ARG(h.size(0) <= std::numeric_limits<int32_t>::max(), "add_rmsnorm_cossim: too many rows");
  const c10::cuda::CUDAGuard guard(h.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(h.scalar_type(), "add_rmsnorm_cossim", [&](auto tag) {
    using T = decltype(tag);
    cuda::launch_add_rmsnorm_cossim<T>(h.data_ptr<T>(), delta.defined() ? delta.data_ptr<T>() : nullptr,
                                       weight.data_ptr<T>(), normed.data_ptr<T>(),
                                       cos.defined() ? cos.data_ptr<float>() : nullptr, h.size(0), h.size(1),
                                       static_cast<float>(eps), stream);
  });
}

}  // namespace dotf
