// The Int8Avx2 kernel built for AVX-512 VNNI (design: linear_avx2_int8.cpp; body:
// linear_int8_kernel.h): vpdpwssd multiplies the int16 pairs and adds them into the int32 sums in one
// instruction (AVX2: vpmaddwd, then vpaddd), and AVX512VL's 32 vector registers hold 12 rows'
// accumulators, so a verify-sized call widens each weight vector once instead of twice. Same integer
// sums, same bits. linear_int8 calls it where int8_linear_isa() is "avx512_vnni".
#include "ops/cpu/linear_avx2.h"

#include "ops/cpu/features.h"

#ifdef DOTF_HAVE_AVX2_KERNEL
#define DOTF_INT8_NS int8_vnni
#define DOTF_INT8_TARGET DOTF_AVX512_VNNI
#define DOTF_INT8_ROWS 12
// Below 4 rows the accumulators are too few chains to hide vpdpwssd's latency (the accumulator passes
// through the multiply; with vpmaddwd only the 1-cycle add is on the chain): one row ran 10-25% slower
// with it, so small blocks keep the AVX2 pair (MB: the micro-kernel's rows, a compile-time constant).
#define DOTF_INT8_MADD(a, w, x) \
  (MB >= 4 ? _mm256_dpwssd_epi32((a), (w), (x)) : _mm256_add_epi32((a), _mm256_madd_epi16((w), (x))))
#include "ops/cpu/linear_int8_kernel.h"
#endif
