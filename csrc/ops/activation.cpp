#include "ops/activation.h"

#include "core/check.h"
#include "ops/cuda/entries.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/silu.h>

namespace dotf {

at::Tensor silu_mul(const at::Tensor& gate_up) {
  DOTF_CHECK_DIM(gate_up, 2, "gate_up");
  DOTF_CHECK_ARG(gate_up.size(1) % 2 == 0, "gate_up must have an even number of columns (gate | up), got ",
                 gate_up.size(1));
  const int64_t I = gate_up.size(1) / 2;
  if (gate_up.is_cuda()) {  // one kernel instead of two, and no [T, I] intermediate
    at::Tensor out = at::empty({gate_up.size(0), I}, gate_up.options());
    silu_mul_cuda(gate_up.contiguous(), out);
    return out;
  }
  // The CPU path, and the CUDA kernel's reference: ATen's silu, then the product.
  return at::silu(gate_up.narrow(1, 0, I)).mul_(gate_up.narrow(1, I, I));
}

}  // namespace dotf
