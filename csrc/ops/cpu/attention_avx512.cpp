// The fused attention kernel built for AVX512VL (design: attention_avx2.cpp; body: attention_kernel.h):
// 256-bit code with 32 vector registers, so four query rows share each key load in the score pass and
// three each value load in the value pass (AVX2 has room for two and one). Same per-row arithmetic, same
// bits. Verify-sized calls (5-9 new rows, 15-63 query rows per KV head) run 10-25% faster, the int8
// mirror's the most (each widened int8 row serves more rows): bench/README.md, "Long contexts".
// attention_with_cache calls it where avx512vl_enabled().
#include "ops/cpu/attention_avx2.h"

#include "ops/cpu/features.h"

#ifdef DOTF_HAVE_AVX2_KERNEL
#define DOTF_ATTN_NS attention_avx512_build
#define DOTF_ATTN_TARGET DOTF_AVX512VL
#define DOTF_ATTN_SCORE_ROWS 4
#define DOTF_ATTN_VALUE_ROWS 3
#include "ops/cpu/attention_kernel.h"
#endif
