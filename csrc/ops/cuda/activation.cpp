// silu_mul_cuda: the tensor wrapper of the silu(gate) * up kernel (ops/cuda/activation.cu).
#include "ops/cuda/entries.h"

#include "ops/cuda/kernels.h"
#include "ops/cuda/wrapper.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace dotf {

void silu_mul_cuda(const at::Tensor& gate_up, at::Tensor& out) {
  // The rank and the even width are checked by silu_mul; devices, dtypes and the layout here.
  DOTF_CHECK_SAME_DEVICE(out, gate_up, "out");
  DOTF_CHECK_SAME_DTYPE(out, gate_up, "out");
  DOTF_CHECK(gate_up.is_contiguous() && out.is_contiguous(), "silu_mul: contiguous tensors expected");
  DOTF_CHECK(out.size(0) == gate_up.size(0) && 2 * out.size(1) == gate_up.size(1), "silu_mul: out must be [T, I]");
  const c10::cuda::CUDAGuard guard(gate_up.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cuda::dispatch_float_types(gate_up.scalar_type(), "silu_mul", [&](auto tag) {
    using T = decltype(tag);
    cuda::launch_silu_mul<T>(gate_up.data_ptr<T>(), out.data_ptr<T>(), gate_up.size(0), out.size(1), stream);
  });
}

}  // namespace dotf
