#pragma once
// Run-time CPU feature detection for the hand-written x86-64 kernels in ops/cpu/. The kernels are
// compiled for AVX2+FMA+F16C through a function attribute (DOTF_AVX2), not a global -mavx2, so the
// library still loads on older x86 CPUs; the op entries call them only when cpu_has_avx2_fma() says
// this CPU runs them. DOTF_HAVE_AVX2_KERNEL marks a compiler and target that can build them at all
// (x86-64 with GCC or Clang); elsewhere the kernels' entry points exist but refuse to run.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DOTF_HAVE_AVX2_KERNEL 1
#define DOTF_AVX2 __attribute__((target("avx2,fma,f16c")))
// AVX-512 VNNI on 256-bit vectors (AVX512VL: 32 vector registers, vpdpwssd): the int8 linear kernel's
// second build (linear_avx512_int8.cpp), chosen at run time where the CPU has it.
#define DOTF_AVX512_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
// AVX512VL without VNNI: the attention kernel's second build (attention_avx512.cpp), 256-bit code with
// 32 vector registers.
#define DOTF_AVX512VL __attribute__((target("avx2,fma,f16c,avx512f,avx512vl")))
#endif

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string_view>

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

// True when the CPU runs the AVX512VL kernels (AVX-512 F and VL; the OS saving their registers is part
// of what the compiler's check tests).
inline bool cpu_has_avx512vl() {
#ifdef DOTF_HAVE_AVX2_KERNEL
  static const bool ok =
      cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return ok;
#else
  return false;
#endif
}

// True when the CPU runs the AVX-512 VNNI kernels (AVX-512 F, VL and VNNI).
inline bool cpu_has_avx512_vnni() {
#ifdef DOTF_HAVE_AVX2_KERNEL
  static const bool ok = cpu_has_avx512vl() && __builtin_cpu_supports("avx512vnni");
  return ok;
#else
  return false;
#endif
}

// Whether kernels may use AVX-512 where the CPU has it: yes unless the environment sets DOTF_AVX512=0
// (to compare, or where AVX-512 lowers the clock). Tests switch it to run both builds on one CPU
// (_C.testing.ops.set_avx512_kernels).
inline std::atomic<bool>& avx512_kernels_allowed() {
  static std::atomic<bool> allowed{[] {
    const char* env = std::getenv("DOTF_AVX512");
    return !(env && std::string_view(env) == "0");
  }()};
  return allowed;
}

// Whether the AVX-512 VNNI kernels run: the CPU has them and they are allowed.
inline bool avx512_vnni_enabled() { return cpu_has_avx512_vnni() && avx512_kernels_allowed().load(); }

// Whether the AVX512VL kernels run: the CPU has them and they are allowed.
inline bool avx512vl_enabled() { return cpu_has_avx512vl() && avx512_kernels_allowed().load(); }

// The attention kernel's instruction set on this CPU: "avx512vl", "avx2" or "none".
inline const char* attention_isa() {
  if (avx512vl_enabled()) return "avx512vl";
  return cpu_has_avx2_fma() ? "avx2" : "none";
}

// Whether the int8 mirror's attention may run its VNNI kernel (attention_int8_vnni.cpp, which also
// quantizes the queries and the softmax weights) where the AVX-512 VNNI kernels run; tests switch it off
// to run the float kernel that widens the mirror's rows exactly (_C.testing.ops.set_int8_attention_vnni).
inline std::atomic<bool>& int8_attention_vnni_allowed() {
  static std::atomic<bool> allowed{true};
  return allowed;
}

// Whether the int8 mirror's attention runs the VNNI kernel for head_dim D (a multiple of 32).
inline bool int8_attention_vnni_enabled(int64_t D) {
  return D % 32 == 0 && avx512_vnni_enabled() && int8_attention_vnni_allowed().load();
}

// The int8 mirror's attention kernel on this CPU for 64-wide heads: "avx512_vnni", else attention_isa().
inline const char* int8_attention_isa() {
  if (int8_attention_vnni_enabled(64)) return "avx512_vnni";
  return attention_isa();
}

// The int8 linear kernel's instruction set on this CPU: "avx512_vnni", "avx2" or "none".
inline const char* int8_linear_isa() {
  if (avx512_vnni_enabled()) return "avx512_vnni";
  return cpu_has_avx2_fma() ? "avx2" : "none";
}

}  // namespace dotf
