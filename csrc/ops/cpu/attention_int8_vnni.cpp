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
#include "ops/attention_int8.h"
#include "ops/cpu/attention_int8_vnni_blocks.h"
#include "ops/cpu/attention_kernel.h"  // the builds' declarations
#include "ops/cpu/attention_rows.h"
#include "ops/cpu/features.h"

#ifdef DOTF_HAVE_AVX2_KERNEL
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

namespace dotf::avx2::attention_int8_vnni_build {
namespace {

// A query row x = q * softmax_scale as int8, rounded as the mirror's rows are (quantize_int8_row: x ~= out *
// row_scale, scale NaN for a non-finite row); offset = 128 * sum(out), what the keys' +128 adds to each
// integer score. x: room for D floats.
template <typename T>
void quantize_query(const T* q, int64_t D, float softmax_scale, float* x, int8_t* out, float* row_scale,
                    int32_t* offset) {
  for (int64_t d = 0; d < D; ++d) x[d] = static_cast<float>(q[d]) * softmax_scale;
  quantize_int8_row(x, D, out, row_scale);
  int32_t sum = 0;
  for (int64_t d = 0; d < D; ++d) sum += out[d];
  *offset = 128 * sum;
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
  std::vector<float> q_row(D);
  for (int64_t i = 0; i < rows; ++i)
    quantize_query(q + (i % T_rows) * q_t + (kvh * G + i / T_rows) * q_h, D, scale, q_row.data(), q8.data() + i * D,
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
  at::parallel_for(0, KVH, kv_head_grain(start + T_rows, G * T_rows, D, KVH), [&](int64_t begin, int64_t end) {
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
