#pragma once
// Run-time CPU feature detection for the hand-written x86-64 kernels in ops/cpu/. The kernels are
// compiled for AVX2+FMA+F16C through a function attribute (DOTF_AVX2), not a global -mavx2, so the
// library still loads on older x86 CPUs; the op entries call them only when cpu_has_avx2_fma() says
// this CPU runs them. DOTF_HAVE_AVX2_KERNEL marks a compiler and target that can build them at all
// (x86-64 with GCC or Clang); elsewhere the kernels' entry points exist but refuse to run.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DOTF_HAVE_AVX2_KERNEL 1
#define DOTF_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

namespace dotf {

// True when the CPU runs the AVX2 kernels (AVX2, FMA and F16C; every AVX2 CPU has all three).
inline bool cpu_has_avx2_fma() {
#ifdef DOTF_HAVE_AVX2_KERNEL
  static const bool ok =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
#else
  return false;
#endif
}

}  // namespace dotf
