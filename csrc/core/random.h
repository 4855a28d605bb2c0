#pragma once
// A counter-based stream of uniforms for sampling: the n-th uniform of a seed is a hash of (seed, n)
// (splitmix64's finalizer, twice), so a call is reproducible from its seed on any device and the only
// state is a counter. 53 random bits per uniform, in [0, 1).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>

namespace dotf {

class RandomStream {
 public:
  explicit RandomStream(uint64_t seed = 0) : seed_(seed) {}

  double uniform() { return static_cast<double>(mix(seed_ ^ mix(counter_++)) >> 11) * 0x1.0p-53; }

  // [n] float64 CPU tensor of the next n uniforms.
  at::Tensor uniforms(int64_t n) {
    at::Tensor out = at::empty({n}, at::TensorOptions().dtype(at::kDouble));
    double* u = out.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) u[i] = uniform();
    return out;
  }

 private:
  static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t seed_;
  uint64_t counter_ = 0;
};

}  // namespace dotf
