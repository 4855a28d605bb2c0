#pragma once
// The gated MLP's activation: silu(gate) * up over the fused gate/up projection's output, one pass.
// Same arithmetic as at::silu followed by mul_ (silu in float32, rounded to the storage dtype, then
// the product in float32, rounded), so replacing the two ops changes no bit.
#include <ATen/core/Tensor.h>

namespace dotf {

// gate_up: [T, 2I], gate in columns [0, I), up in [I, 2I)
// returns: [T, I] silu(gate) * up
at::Tensor silu_mul(const at::Tensor& gate_up);

}  // namespace dotf
