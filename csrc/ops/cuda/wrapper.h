#pragma once
// Helpers of the thin tensor wrappers (ops/cuda/<op>.cpp): the checks every wrapper makes on the
// tensors it touches, and the dtype switch onto the launchers' element types (ops/cuda/kernels.h).
#include "core/check.h"

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace dotf::cuda {

// Calls f(T{}) with T = float, c10::Half or c10::BFloat16 (the types DOTF_FOR_CUDA_FLOAT_TYPES
// instantiates the launchers for). float64 (and anything else) is refused with a TypeError: the
// CUDA kernels are not instantiated for it.
template <typename F>
void dispatch_float_types(at::ScalarType type, const char* op, F&& f) {
  switch (type) {
    case at::kFloat: f(float{}); return;
    case at::kHalf: f(c10::Half{}); return;
    case at::kBFloat16: f(c10::BFloat16{}); return;
    case at::kDouble:
      DOTF_CHECK_TYPE(false, op, ": float64 is not supported on CUDA (use float32, float16 or bfloat16; "
                      "float64 runs on CPU only)");
    default:
      DOTF_CHECK_TYPE(false, op, ": unsupported dtype ", type, " on CUDA (float32, float16, bfloat16)");
  }
}

}  // namespace dotf::cuda

// Same device as `ref`, and (when given) the same dtype: wrappers check every tensor they touch.
#define DOTF_CHECK_SAME_DEVICE(t, ref, name) \
  DOTF_CHECK_ARG((t).device() == (ref).device(), name, " must be on ", (ref).device(), ", got ", (t).device())
#define DOTF_CHECK_SAME_DTYPE(t, ref, name) \
  DOTF_CHECK_TYPE((t).scalar_type() == (ref).scalar_type(), name, " must have dtype ", (ref).scalar_type(), \
                  ", got ", (t).scalar_type())
