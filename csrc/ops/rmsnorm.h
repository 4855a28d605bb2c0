#pragma once
// Residual add + RMSNorm, fused with the cosine-similarity measurement that draft selection uses.
//   h_new = h + delta;  normed = weight * rmsnorm(h_new);  cos[t] = <h, h_new> / (|h| |h_new|)
// Without delta it is a plain RMSNorm of h (and no similarity). The normalisation runs in float32
// and is rounded to the storage dtype before the weight multiply, exactly as transformers does, so
// that float64 runs reproduce the reference's tokens.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf {

// h: [T, C] residual stream, updated in place when delta is given
// delta: [T, C] sublayer output, or undefined
// weight: [C] RMSNorm weight of the next sublayer
// normed: [T, C] output
// cos: [T] float32 output, or undefined (needs delta)
void add_rmsnorm_cossim(at::Tensor& h, const at::Tensor& delta, const at::Tensor& weight, double eps,
                        at::Tensor& normed, const at::Tensor& cos);

// Raw-pointer CPU implementation, also the reference for the CUDA kernel.
// h, delta (or nullptr), normed: [rows, cols]; weight: [cols]; cos: [rows] or nullptr
template <typename scalar_t>
void add_rmsnorm_cossim_cpu(scalar_t* h, const scalar_t* delta, const scalar_t* weight, scalar_t* normed,
                            float* cos, int64_t rows, int64_t cols, float eps);

}  // namespace dotf
