#include "ops/attention.h"

#include "core/check.h"
#include "ops/cpu/attention_avx2.h"
#include "ops/cuda/entries.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/softmax.h>

#include <limits>
#include <vector>

namespace dotf {

at::Tensor attention_with_cache_reference(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                          int64_t start, double scale, int64_t window) {
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t KVH = k_cache.size(1), G = H / KVH, S = start + T;
  // A masked key weighs exactly 0 below, but 0 * NaN is NaN: a non-finite V row among the new ones (a
  // rejected draft token the model cannot process) would poison the rows before it, which plain
  // decoding computes finite. Then go row by row, each over exactly the keys it sees.
  if (T > 1 && !at::isfinite(v_cache.narrow(0, start, T)).all().item<bool>()) {
    std::vector<at::Tensor> rows;
    for (int64_t t = 0; t < T; ++t)
      rows.push_back(attention_with_cache_reference(q.narrow(0, t, 1), k_cache, v_cache, start + t, scale, window));
    return at::cat(rows);
  }
  // Group the query heads that share a KV head: [KVH, G*T, D].
  at::Tensor qg = q.view({T, KVH, G, D}).permute({1, 2, 0, 3}).reshape({KVH, G * T, D});
  at::Tensor k = k_cache.narrow(0, 0, S).permute({1, 2, 0});  // [KVH, D, S]
  at::Tensor v = v_cache.narrow(0, 0, S).permute({1, 0, 2});  // [KVH, S, D]
  at::Tensor scores = at::bmm(qg, k).mul_(scale);             // [KVH, G*T, S]
  if (T > 1 || window > 0) {
    // Causal mask among the new positions: key s is hidden from query t when s > start + t; under a
    // window also when kAttentionSinks <= s <= start + t - window.
    auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    const at::Tensor key = at::arange(S, opts).unsqueeze(0), position = (at::arange(T, opts) + start).unsqueeze(1);
    at::Tensor hidden = key > position;  // [T, S]
    if (window > 0) hidden = hidden | ((key >= kAttentionSinks) & (key <= position - window));
    scores.view({KVH, G, T, S}).masked_fill_(hidden, -std::numeric_limits<double>::infinity());
  }
  // ATen's vectorized softmax reduces a row shorter than its vector width (8-16 floats) in another
  // order than a longer one, so a short row's probabilities would depend on how many masked keys pad
  // it: a verify row would differ (at float32 rounding) from the same row of a plain decoding step.
  // Padding short rows with -inf keys (weight exactly 0) makes each row's result independent of T.
  constexpr int64_t kMinKeys = 64;
  if (S < kMinKeys) scores = at::constant_pad_nd(scores, {0, kMinKeys - S}, -std::numeric_limits<double>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).narrow(-1, 0, S).to(q.scalar_type()).contiguous();
  at::Tensor out = at::bmm(probs, v);  // [KVH, G*T, D]
  return out.view({KVH, G, T, D}).permute({2, 0, 1, 3}).reshape({T, H * D});
}

namespace {

// A prefill (rows 0..T-1, more than the fused kernel takes) through torch's causal attention (flash
// attention on CPU: no [H, T, T] scores, mask or separate softmax pass): the whole SmolLM2 prefill of
// a 304-token prompt took 0.98 s instead of 1.20 s with the reference path below (1 thread). KV heads are
// expanded to the query heads (a copy of T rows, small next to the T x T work).
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, double scale) {
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2), KVH = k_cache.size(1), G = H / KVH;
  auto heads = [&](const at::Tensor& cache) {  // [T, KVH, D] rows of the cache -> [1, H, T, D]
    at::Tensor x = cache.narrow(0, 0, T).permute({1, 0, 2});
    if (G > 1) x = x.unsqueeze(1).expand({KVH, G, T, D}).reshape({H, T, D});
    return x.unsqueeze(0);
  };
  const at::Tensor out = at::scaled_dot_product_attention(q.permute({1, 0, 2}).unsqueeze(0), heads(k_cache),
                                                          heads(v_cache), std::nullopt, 0.0, /*is_causal=*/true, scale);
  return out.squeeze(0).permute({1, 0, 2}).reshape({T, H * D});  // [1, H, T, D] -> [T, H*D]
}

}  // namespace

bool fused_attention_supports(const at::Tensor& q, const at::Tensor& k_cache) {
  return q.size(0) <= kFusedAttentionMaxRows && avx2::attention_supports(q, k_cache);
}

at::Tensor attention_with_cache_cpu(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                    int64_t start, double scale, int64_t window) {
  DOTF_CHECK_ARG(window >= 0, "attention window must be >= 0, got ", window);
  if (fused_attention_supports(q, k_cache))
    return avx2::attention_with_cache(q, k_cache, v_cache, start, scale, window);
  // A non-finite V row needs the reference path's row-by-row treatment (masked keys weigh 0, 0 * NaN).
  // float64 stays on the reference path: torch's CPU flash kernel loses digits there (3.7e-8 absolute
  // on a tiny model's logits, vs 1e-15 for the reference), and float64 is what parity is tested in.
  const int64_t T = q.size(0);
  if (start == 0 && T > 1 && window == 0 && q.scalar_type() != at::kDouble &&
      at::isfinite(v_cache.narrow(0, 0, T)).all().item<bool>())
    return prefill_attention(q, k_cache, v_cache, scale);
  return attention_with_cache_reference(q, k_cache, v_cache, start, scale, window);
}

at::Tensor attention_with_cache(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                int64_t start, double scale, const at::Tensor& device_start, int64_t window) {
  DOTF_CHECK_DIM(q, 3, "q");
  DOTF_CHECK_DIM(k_cache, 3, "k_cache");
  DOTF_CHECK(v_cache.sizes() == k_cache.sizes(), "v_cache must match k_cache");
  DOTF_CHECK(q.size(2) == k_cache.size(2), "q head_dim ", q.size(2), " != cache head_dim ", k_cache.size(2));
  DOTF_CHECK(q.size(1) % k_cache.size(1) == 0, "query heads must be a multiple of KV heads");
  DOTF_CHECK(start >= 0 && start + q.size(0) <= k_cache.size(0), "attention: rows [0, ", start + q.size(0),
             ") exceed the cache capacity ", k_cache.size(0));
  if (device_start.defined()) check_device_start(device_start, q, "attention_with_cache");
  if (q.is_cuda()) {
    DOTF_CHECK(window == 0, "attention windows (draft_window) are CPU only; the CUDA kernel attends every key");
    return attention_with_cache_cuda(q, k_cache, v_cache, start, scale, device_start);
  }
  if (device_start.defined()) start = read_device_start(device_start, start, "attention_with_cache");
  return attention_with_cache_cpu(q, k_cache, v_cache, start, scale, window);
}

}  // namespace dotf
