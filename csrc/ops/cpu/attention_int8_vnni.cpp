// Attention over the draft's int8 KV mirror with AVX-512 VNNI: both products run on integers.
//
// Why: at long contexts the draft's attention is bound by arithmetic, not by bytes. A GQA head group
// (Qwen2.5: 7 query heads per KV head) reuses every loaded key for 7 or more query rows, so the float
// kernel (attention_kernel.h), which widens each int8 row to fp32 and multiplies with FMAs, spends its
// time in the multiplies; checking a lookup proposal of 8 tokens at 8k positions costs the draft about
// what the verify costs. vpdpbusd multiplies 32 unsigned by 32 signed bytes and adds them in fours into
// 8 int32 lanes: four times an FMA's products per instruction.
//   * Scores: each query row (already times the softmax scale) is quantized to int8 with one scale per
//     (row, head), max|q| / 127. The keys of a 64-key block are transposed once (shared by every row of
//     the head) so that a vector's 8 lanes are 8 keys: one vpdpbusd with a query's 4 bytes broadcast adds
//     4 dims into 8 scores, and no score needs a lane reduction. The keys enter as unsigned bytes, k + 128
//     (a sign-bit flip), and the 128 * sum(q) this adds is subtracted once per score. Score = (sum -
//     offset) * q_scale * the key's scale.
//   * Softmax: one pass per row with a cheaper exp (exp8_draft), the values' scales folded in.
//   * Values: the softmax numerators times the values' scales are quantized to uint8 per (row, block of
//     64 keys) with the block's max / 255, so the small weights of a long tail keep their own scale in
//     their own block. Four keys' value bytes are interleaved per dim on the fly (unpack within 128-bit
//     halves, shared by every row of the head), and one vpdpbusd adds four keys for 8 dims. The block's
//     int32 sums are scaled into fp32 accumulators.
// What the draft gives up beyond the mirror's own rounding: about 0.8% of the output (queries and weights
// rounded to 1/254 and 1/510 of their largest; tests/python/ops/test_attention_int8_vnni.py bounds it
// against the float64 references). Every sum
// is exact in int32, and a row's blocks sit at fixed places of its own key index, so a row's result
// depends on its own keys only: batch invariant, as the float kernel is. Keys past a row's position get
// weight 0 and are read only up to the last row this call wrote (int8 values are always finite; a
// non-finite row's NaN scale is never multiplied in for a row that does not see it).
// int8_attention_with_cache (attention_avx2.cpp) runs it where int8_attention_vnni_enabled(D).
#include "ops/cpu/attention_kernel.h"  // the builds' declarations
#include "ops/cpu/attention_rows.h"
#include "ops/cpu/features.h"
#include "ops/cpu/simd.h"

#ifdef DOTF_HAVE_AVX2_KERNEL
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

namespace dotf::avx2::attention_int8_vnni_build {
namespace {

constexpr int64_t kBlock = 64;     // keys per block: its transposed K and interleaved V stay in L1
constexpr int kScoreRows = 4;      // query rows per transposed key load (4 rows x 32 keys of accumulators)
constexpr int kValueRows = 2;      // rows per interleaved value load (2 rows x 64 dims of accumulators)

// A query row x = q * softmax_scale as int8: x ~= out * row_scale; offset = 128 * sum(out), what the
// keys' +128 adds to each integer score. A non-finite row gets scale NaN.
template <typename T>
void quantize_query(const T* q, int64_t D, float softmax_scale, int8_t* out, float* row_scale, int32_t* offset) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t d = 0; d < D; ++d) {
    const float x = static_cast<float>(q[d]) * softmax_scale;
    finite = finite && std::isfinite(x);
    amax = std::max(amax, std::abs(x));
  }
  int32_t sum = 0;
  const float inv = finite && amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    const float x = static_cast<float>(q[d]) * softmax_scale * inv;
    out[d] = static_cast<int8_t>(finite ? std::clamp(std::nearbyint(x), -127.0f, 127.0f) : 0.0f);
    sum += out[d];
  }
  *row_scale = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
  *offset = 128 * sum;
}

DOTF_AVX512_VNNI inline __m256i load32(const int8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Eight keys' rows (D int8 each) transposed so that the lanes are the keys: out[t] holds, in lane l, key
// l's dims 4t..4t+3 as unsigned bytes (k + 128, a sign-bit flip: vpdpbusd's first operand is unsigned).
// One vpdpbusd of out[t] with a query's dims 4t..4t+3 broadcast then adds them into eight keys' scores,
// so the scores need no lane reduction.
DOTF_AVX512_VNNI inline void transpose_keys8(const int8_t* const* rows, int64_t D, __m256i* out) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t c = 0; c < D / 32; ++c) {  // an 8 x 8 transpose of 32-bit elements per 32 dims
    __m256i r[8];
    for (int l = 0; l < 8; ++l) r[l] = _mm256_xor_si256(load32(rows[l] + 32 * c), flip);
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    __m256i* o = out + 8 * c;  // quads 8c .. 8c + 7
    _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u0, u4, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u1, u5, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u2, u6, 0x20));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u3, u7, 0x20));
    _mm256_storeu_si256(o + 4, _mm256_permute2x128_si256(u0, u4, 0x31));
    _mm256_storeu_si256(o + 5, _mm256_permute2x128_si256(u1, u5, 0x31));
    _mm256_storeu_si256(o + 6, _mm256_permute2x128_si256(u2, u6, 0x31));
    _mm256_storeu_si256(o + 7, _mm256_permute2x128_si256(u3, u7, 0x31));
  }
}

// Scores of R quantized query rows against 32 keys (four transposed groups of eight, kt[g * D / 4 + t]):
// out[r][0, 32) = (integer dot product - offset[r]) * row_scale[r] * key_scale[0, 32). The R rows share
// each transposed key load; the query's four bytes broadcast from memory.
template <int R>
DOTF_AVX512_VNNI inline void score_keys32(const int8_t* const* q, int64_t D, const __m256i* kt, const float* row_scale,
                                          const int32_t* offset, const float* key_scale, float* const* out) {
  static_assert(R >= 1 && R <= kScoreRows, "up to 4 rows per key load");
  const __m256i z = _mm256_setzero_si256();
  const int64_t quads = D / 4;
#define DOTF_ROW_ACC(r) __m256i a##r##0 = z, a##r##1 = z, a##r##2 = z, a##r##3 = z;
  DOTF_ROW_ACC(0) DOTF_ROW_ACC(1) DOTF_ROW_ACC(2) DOTF_ROW_ACC(3)
#undef DOTF_ROW_ACC
  for (int64_t t = 0; t < quads; ++t) {
    const __m256i k0 = _mm256_loadu_si256(kt + t), k1 = _mm256_loadu_si256(kt + quads + t);
    const __m256i k2 = _mm256_loadu_si256(kt + 2 * quads + t), k3 = _mm256_loadu_si256(kt + 3 * quads + t);
#define DOTF_ROW_DOT(r)                                  \
  if constexpr (R > r) {                                 \
    int32_t quad;                                        \
    std::memcpy(&quad, q[r] + 4 * t, 4);                 \
    const __m256i b = _mm256_set1_epi32(quad);           \
    a##r##0 = _mm256_dpbusd_epi32(a##r##0, k0, b);       \
    a##r##1 = _mm256_dpbusd_epi32(a##r##1, k1, b);       \
    a##r##2 = _mm256_dpbusd_epi32(a##r##2, k2, b);       \
    a##r##3 = _mm256_dpbusd_epi32(a##r##3, k3, b);       \
  }
    DOTF_ROW_DOT(0) DOTF_ROW_DOT(1) DOTF_ROW_DOT(2) DOTF_ROW_DOT(3)
#undef DOTF_ROW_DOT
  }
#define DOTF_GROUP_OUT(r, g)                                                                          \
  _mm256_storeu_ps(out[r] + 8 * g,                                                                    \
                   _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(a##r##g, off)),                  \
                                 _mm256_mul_ps(rs, _mm256_loadu_ps(key_scale + 8 * g))));
#define DOTF_ROW_OUT(r)                                                                               \
  if constexpr (R > r) {                                                                              \
    const __m256i off = _mm256_set1_epi32(offset[r]);                                                 \
    const __m256 rs = _mm256_set1_ps(row_scale[r]);                                                   \
    DOTF_GROUP_OUT(r, 0) DOTF_GROUP_OUT(r, 1) DOTF_GROUP_OUT(r, 2) DOTF_GROUP_OUT(r, 3)               \
  }
  DOTF_ROW_OUT(0) DOTF_ROW_OUT(1) DOTF_ROW_OUT(2) DOTF_ROW_OUT(3)
#undef DOTF_ROW_OUT
#undef DOTF_GROUP_OUT
}

// Four keys' value rows (D int8 each) interleaved for vpdpbusd: per 32 dims, four vectors whose 32-bit
// lanes hold the four keys' bytes of one dim. Vector p of dims [32c, 32c + 32) holds dims 32c + 4p + l in
// lanes l = 0..3 and 32c + 16 + 4p + l - 4 in lanes 4..7 (the unpacks work within 128-bit halves);
// output_dim() undoes this order.
DOTF_AVX512_VNNI inline void interleave_keys4(const int8_t* r0, const int8_t* r1, const int8_t* r2, const int8_t* r3,
                                              int64_t D, __m256i* out) {
  for (int64_t c = 0; c < D / 32; ++c) {
    const __m256i a = load32(r0 + 32 * c), b = load32(r1 + 32 * c), x = load32(r2 + 32 * c), y = load32(r3 + 32 * c);
    const __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
    const __m256i xy_lo = _mm256_unpacklo_epi8(x, y), xy_hi = _mm256_unpackhi_epi8(x, y);
    _mm256_storeu_si256(out + 4 * c + 0, _mm256_unpacklo_epi16(ab_lo, xy_lo));
    _mm256_storeu_si256(out + 4 * c + 1, _mm256_unpackhi_epi16(ab_lo, xy_lo));
    _mm256_storeu_si256(out + 4 * c + 2, _mm256_unpacklo_epi16(ab_hi, xy_hi));
    _mm256_storeu_si256(out + 4 * c + 3, _mm256_unpackhi_epi16(ab_hi, xy_hi));
  }
}

// The dim that lane `slot` of the value accumulators (interleaved order, 8 lanes per vector) holds.
inline int64_t output_dim(int64_t slot) {
  const int64_t c = slot / 32, p = slot / 8 % 4, l = slot % 8;
  return 32 * c + 4 * p + (l < 4 ? l : 12 + l);
}

// A row's weights over one block (kBlock floats, zero past its keys) -> uint8 with one scale (max / 255);
// returns the scale, 0 when every weight is 0.
DOTF_AVX512_VNNI inline float quantize_weights(const float* w, uint8_t* out) {
  const float wmax = simd::max_of(w, kBlock);
  if (!(wmax > 0.0f)) return 0.0f;
  const __m256 inv = _mm256_set1_ps(255.0f / wmax);
  for (int64_t s = 0; s < kBlock; s += 8) {
    const __m256i x = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(w + s), inv));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + s), _mm256_mask_cvtusepi32_epi8(_mm_setzero_si128(), 0xff, x));
  }
  return wmax / 255.0f;
}

// For R rows and chunks [c0, c0 + C) of 32 dims: acc[r] (interleaved order) += block_scale[r] * the
// integer sums over `groups` interleaved four-key groups of w[r] times the values.
template <int R, int C>
DOTF_AVX512_VNNI void accumulate_values(const uint8_t* const* w, const __m256i* vt, int64_t chunks, int64_t c0,
                                        int64_t groups, const float* block_scale, float* const* acc) {
  static_assert(R >= 1 && R <= kValueRows && C >= 1 && C <= 2, "2 rows of 64 dims");
  const __m256i z = _mm256_setzero_si256();
// OP(r, c, p) for every accumulator: 2 rows x 2 chunks x 4 vectors (named, so they stay in registers).
#define DOTF_EACH_CP(OP, r) OP(r, 0, 0) OP(r, 0, 1) OP(r, 0, 2) OP(r, 0, 3) OP(r, 1, 0) OP(r, 1, 1) OP(r, 1, 2) OP(r, 1, 3)
#define DOTF_EACH_ACC(OP) DOTF_EACH_CP(OP, 0) DOTF_EACH_CP(OP, 1)
#define DOTF_ZERO_ACC(r, c, p) __m256i a##r##c##p = z;
  DOTF_EACH_ACC(DOTF_ZERO_ACC)
#undef DOTF_ZERO_ACC
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i* vg = vt + (g * chunks + c0) * 4;
    int32_t w0, w1 = 0;
    std::memcpy(&w0, w[0] + 4 * g, 4);
    if constexpr (R > 1) std::memcpy(&w1, w[1] + 4 * g, 4);
    const __m256i b0 = _mm256_set1_epi32(w0), b1 = _mm256_set1_epi32(w1);
#define DOTF_DOT(r, c, p)                                                                  \
  if constexpr (R > r && C > c) a##r##c##p = _mm256_dpbusd_epi32(a##r##c##p, b##r, _mm256_loadu_si256(vg + 4 * c + p));
    DOTF_EACH_ACC(DOTF_DOT)
#undef DOTF_DOT
  }
#define DOTF_STORE_ACC(r, c, p)                                                                \
  if constexpr (R > r && C > c) {                                                              \
    float* f = acc[r] + ((c0 + c) * 4 + p) * 8;                                                \
    _mm256_storeu_ps(f, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a##r##c##p), _mm256_set1_ps(block_scale[r]), \
                                        _mm256_loadu_ps(f)));                                  \
  }
  DOTF_EACH_ACC(DOTF_STORE_ACC)
#undef DOTF_STORE_ACC
#undef DOTF_EACH_ACC
#undef DOTF_EACH_CP
}

// accumulate_values over all D dims, 64 per sweep.
template <int R>
DOTF_AVX512_VNNI void accumulate_rows(const uint8_t* const* w, const __m256i* vt, int64_t chunks, int64_t groups,
                                      const float* block_scale, float* const* acc) {
  for (int64_t c0 = 0; c0 < chunks; c0 += 2) {
    if (chunks - c0 >= 2)
      accumulate_values<R, 2>(w, vt, chunks, c0, groups, block_scale, acc);
    else
      accumulate_values<R, 1>(w, vt, chunks, c0, groups, block_scale, acc);
  }
}

// exp(x) for x <= 0, to about 4e-5 relative (the draft's weights are rounded to 1/255 of their block's
// largest anyway): 2^n times a degree-4 polynomial in the fraction, half the float kernel's work. A NaN x
// stays NaN; x below -87 gives about 1e-38.
DOTF_AVX512_VNNI inline __m256 exp8_draft(__m256 x) {
  // max(lo, x) with x second keeps a NaN x (the second operand is returned when either is NaN).
  const __m256 t = _mm256_mul_ps(_mm256_max_ps(_mm256_set1_ps(-87.0f), x), _mm256_set1_ps(1.44269504088896341f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);  // in [-0.5, 0.5]: 2^f by its Taylor series, 4e-5 at the ends
  __m256 p = _mm256_set1_ps(9.6181291e-3f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504109e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022651e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

// One row's softmax numerators over its n scores, times the values' scales (value_scale, compact order),
// in place; zero from n to `padded`. Returns the numerators' sum, or NaN when a score, a numerator or a
// weight is not finite (the row is then bad).
DOTF_AVX512_VNNI float softmax_weights(float* scores, int64_t n, int64_t padded, const float* value_scale) {
  const float max_score = simd::max_of(scores, n);  // skips a NaN score, which propagates through exp
  const __m256 shift = _mm256_set1_ps(max_score);
  __m256 sum = _mm256_setzero_ps(), weighted = _mm256_setzero_ps();
  for (int64_t s = 0; s < n; s += 8) {
    // Past n: exp(-inf) is ~0 and the scale is whatever the padding holds, so mask those lanes to 0.
    const __m256 e = exp8_draft(_mm256_sub_ps(_mm256_loadu_ps(scores + s), shift));
    const __m256 keep = _mm256_castsi256_ps(
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n - s)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 w = _mm256_and_ps(keep, _mm256_mul_ps(e, _mm256_loadu_ps(value_scale + s)));
    _mm256_storeu_ps(scores + s, w);
    sum = _mm256_add_ps(sum, _mm256_and_ps(keep, e));
    weighted = _mm256_add_ps(weighted, w);
  }
  std::fill(scores + (n + 7) / 8 * 8, scores + padded, 0.0f);
  const float total = simd::hsum8(sum);
  return std::isfinite(simd::hsum8(weighted)) ? total : std::numeric_limits<float>::quiet_NaN();
}

// All G*T query rows of one KV head, class by class: the rows of one window gap see the same key at each
// compact index (RowKeys), so they share every transposed key block and every interleaved value block.
// q: [T, H, D] (strides q_t, q_h); k, v: this head's rows, D apart; k_scale, v_scale: their scales;
// out: [T, H * D].
template <typename T>
DOTF_AVX512_VNNI void attend_kv_head(const T* q, int64_t q_t, int64_t q_h, const int8_t* k, const int8_t* v,
                                     const float* k_scale, const float* v_scale, int64_t kvh, int64_t G,
                                     int64_t T_rows, int64_t H, int64_t D, int64_t start, int64_t window, float scale,
                                     T* out) {
  static_assert(kAttentionSinks % 4 == 0, "four-key value groups never straddle the sinks' end");
  const int64_t rows = G * T_rows, last_key = start + T_rows - 1, chunks = D / 32, quads = D / 4;
  // Row i is query head kvh * G + i / T_rows at position start + i % T_rows.
  std::vector<RowKeys> seen(rows);
  int64_t max_n = 0;
  for (int64_t i = 0; i < rows; ++i) {
    seen[i] = row_keys(start + i % T_rows + 1, window);
    max_n = std::max(max_n, seen[i].n);
  }
  std::vector<int64_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return seen[a].gap < seen[b].gap; });
  const int64_t padded = (max_n + kBlock - 1) / kBlock * kBlock;
  std::vector<int8_t> q8(rows * D);
  std::vector<float> q_scale(rows), inv_sum(rows), acc(rows * D, 0.0f), key_scale(padded), value_scale(padded);
  std::vector<int32_t> q_offset(rows);
  std::vector<char> bad(rows, 0);
  for (int64_t i = 0; i < rows; ++i)
    quantize_query(q + (i % T_rows) * q_t + (kvh * G + i / T_rows) * q_h, D, scale, q8.data() + i * D,
                   &q_scale[i], &q_offset[i]);
  const std::unique_ptr<float[]> scores(new float[rows * padded]);
  // One block's keys transposed (eight groups of eight) and values interleaved (16 groups of four), as
  // 32-byte vectors in int64 storage.
  std::vector<int64_t> kt_store(kBlock / 8 * quads * 4), vt_store(kBlock / 4 * chunks * 4 * 4);
  __m256i* kt = reinterpret_cast<__m256i*>(kt_store.data());
  __m256i* vt = reinterpret_cast<__m256i*>(vt_store.data());
  // Keys past the last row this call wrote are read as that row: their scores and weights are never used.
  auto key_row = [&](const int8_t* base, int64_t key) { return base + std::min(key, last_key) * D; };

  for (int64_t c0 = 0; c0 < rows;) {
    const RowKeys& keys = seen[order[c0]];  // the class's split and gap
    int64_t c1 = c0, n = 0;
    for (; c1 < rows && seen[order[c1]].gap == keys.gap; ++c1) n = std::max(n, seen[order[c1]].n);
    const int64_t n_padded = (n + kBlock - 1) / kBlock * kBlock;
    for (int64_t j = 0; j < n_padded; ++j) {  // the scales in compact order
      const int64_t key = std::min(keys.key(j), last_key);
      key_scale[j] = k_scale[key];
      value_scale[j] = v_scale[key];
    }
    // Scores, 32 keys at a time (past a row's own keys too: computed, never used).
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const int64_t sets = (std::min(j0 + kBlock, n) - j0 + 31) / 32;  // of four eight-key groups
      for (int64_t g = 0; g < 4 * sets; ++g) {
        const int8_t* group[8];
        for (int l = 0; l < 8; ++l) group[l] = key_row(k, keys.key(j0 + 8 * g + l));
        transpose_keys8(group, D, kt + g * quads);
      }
      for (int64_t i = c0; i < c1; i += kScoreRows) {
        const int g = static_cast<int>(std::min<int64_t>(kScoreRows, c1 - i));
        const int8_t* qr[kScoreRows];
        float rs[kScoreRows];
        int32_t off[kScoreRows];
        float* o[kScoreRows];
        for (int r = 0; r < g; ++r) {
          const int64_t row = order[i + r];
          qr[r] = q8.data() + row * D;
          rs[r] = q_scale[row];
          off[r] = q_offset[row];
        }
        for (int64_t set = 0; set < sets; ++set) {
          const int64_t j = j0 + 32 * set;
          for (int r = 0; r < g; ++r) o[r] = scores.get() + order[i + r] * padded + j;
          const __m256i* kts = kt + 4 * set * quads;
          switch (g) {
            case 4: score_keys32<4>(qr, D, kts, rs, off, key_scale.data() + j, o); break;
            case 3: score_keys32<3>(qr, D, kts, rs, off, key_scale.data() + j, o); break;
            case 2: score_keys32<2>(qr, D, kts, rs, off, key_scale.data() + j, o); break;
            default: score_keys32<1>(qr, D, kts, rs, off, key_scale.data() + j, o); break;
          }
        }
      }
    }
    for (int64_t i = c0; i < c1; ++i) {
      const int64_t row = order[i];
      float* si = scores.get() + row * padded;
      const float sum = softmax_weights(si, seen[row].n, padded, value_scale.data());
      bad[row] = !(std::isfinite(q_scale[row]) && std::isfinite(sum) && sum > 0.0f);
      if (bad[row]) std::fill(si, si + padded, 0.0f);
      inv_sum[row] = 1.0f / sum;
    }
    // Values, one interleaved block at a time.
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const int64_t groups = (std::min(j0 + kBlock, n) - j0 + 3) / 4;
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t key = keys.key(j0 + 4 * gi);
        interleave_keys4(key_row(v, key), key_row(v, key + 1), key_row(v, key + 2), key_row(v, key + 3), D,
                         vt + gi * chunks * 4);
      }
      alignas(32) uint8_t w8[kValueRows][kBlock];
      const uint8_t* w[kValueRows] = {w8[0], w8[1]};
      float block_scale[kValueRows];
      float* sums[kValueRows];
      int pending = 0;
      for (int64_t i = c0; i < c1; ++i) {
        const int64_t row = order[i];
        const float s = quantize_weights(scores.get() + row * padded + j0, w8[pending]);
        if (s == 0.0f) continue;  // no weight in this block (past the row's keys, or a bad row)
        block_scale[pending] = s;
        sums[pending] = acc.data() + row * D;
        if (++pending == kValueRows) {
          accumulate_rows<kValueRows>(w, vt, chunks, groups, block_scale, sums);
          pending = 0;
        }
      }
      if (pending) accumulate_rows<1>(w, vt, chunks, groups, block_scale, sums);
    }
    c0 = c1;
  }
  for (int64_t i = 0; i < rows; ++i) {
    T* oi = out + (i % T_rows) * H * D + (kvh * G + i / T_rows) * D;
    for (int64_t s = 0; s < D; ++s)
      oi[output_dim(s)] =
          static_cast<T>(bad[i] ? std::numeric_limits<float>::quiet_NaN() : acc[i * D + s] * inv_sum[i]);
  }
}

template <typename T>
void run(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q, const at::Tensor& k_scale,
         const at::Tensor& v_scale, int64_t start, int64_t window, float scale, at::Tensor& out) {
  const int64_t T_rows = q.size(0), H = q.size(1), D = q.size(2), KVH = k_q.size(0), G = H / KVH;
  const int64_t capacity = k_q.size(1);
  const T* qp = q.const_data_ptr<T>();
  T* op = out.mutable_data_ptr<T>();
  const int8_t* k = k_q.const_data_ptr<int8_t>();
  const int8_t* v = v_q.const_data_ptr<int8_t>();
  const float* ks = k_scale.const_data_ptr<float>();
  const float* vs = v_scale.const_data_ptr<float>();
  // One task per KV head: each is independent and computes the same numbers on any thread.
  const int64_t grain = (start + T_rows) * G * T_rows * D < 65536 ? KVH : 1;
  at::parallel_for(0, KVH, grain, [&](int64_t begin, int64_t end) {
    for (int64_t h = begin; h < end; ++h)
      attend_kv_head(qp, q.stride(0), q.stride(1), k + h * capacity * D, v + h * capacity * D, ks + h * capacity,
                     vs + h * capacity, h, G, T_rows, H, D, start, window, scale, op);
  });
}

}  // namespace

// q: [T, H, D] (D a multiple of 32, last dim contiguous); k_q, v_q: [KVH, capacity, D] int8; k_scale,
// v_scale: [KVH, capacity] float32 (all contiguous); out: [T, H * D].
void int8_attention(const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q, const at::Tensor& k_scale,
                    const at::Tensor& v_scale, int64_t start, int64_t window, float scale, at::Tensor& out) {
  switch (q.scalar_type()) {
    case at::kFloat: run<float>(q, k_q, v_q, k_scale, v_scale, start, window, scale, out); break;
    case at::kBFloat16: run<c10::BFloat16>(q, k_q, v_q, k_scale, v_scale, start, window, scale, out); break;
    default: run<c10::Half>(q, k_q, v_q, k_scale, v_scale, start, window, scale, out); break;
  }
}

}  // namespace dotf::avx2::attention_int8_vnni_build
#endif  // DOTF_HAVE_AVX2_KERNEL
