#pragma once
// The dtype switch of the CPU references (ops/<op>.cpp) and their accumulator types. The CUDA
// wrappers have their own switch (ops/cuda/wrapper.h): their kernels exist for fewer dtypes.
#include <ATen/Dispatch.h>

// Floating dtypes every op supports: float32, float64 (CPU), float16, bfloat16.
#define DOTF_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace dotf {
// Accumulator type of a storage type: float for half/bfloat16/float, double for double.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;
}  // namespace dotf
