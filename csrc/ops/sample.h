#pragma once
// Sampling as transformers' generate(do_sample=True) does it, and the speculative sampling test that
// keeps a speculative round's output distributed exactly as the full model's (Leviathan et al. 2023;
// Chen et al. 2023):
//   warp:    logits / temperature -> top-k -> top-p -> min-p (transformers' order and meanings) -> softmax
//   sample:  the token whose interval of the cumulative distribution, in vocabulary order, holds u
//   accept:  draft x_i (drawn from q_i) is kept iff u_i * q_i(x_i) < p_i(x_i), i.e. with probability
//            min(1, p_i(x_i) / q_i(x_i)); at the first rejection the token is drawn from
//            norm(max(0, p_i - q_i)); when every draft is kept, the bonus token is drawn from p_k.
//            A draft proposed deterministically (n-gram lookup) has q_i = its indicator.
// Uniforms come from the caller (core/random.h), so that a seed reproduces a call on any device.
// CUDA tensors run the kernels of ops/cuda/sample_warp.cu and ops/cuda/sample.cu (float32 rows; float16
// and bfloat16 logits are warped in float32, float64 is refused), which read nothing back to the host:
// where the CPU raises for a bad logits row or a draft outside the vocabulary, CUDA returns a NaN row from
// the warp and token -1 from a draw. They agree with the CPU up to rounding (expf against the CPU's vector
// exp, sums in another order), not bit for bit: the same logits and uniforms give the same tokens on both
// except where a knife-edge decision (a CDF boundary, the top-p or min-p cut) falls within that rounding.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace dotf {

struct SamplingParams {
  double temperature = 1.0;  // > 0
  int64_t top_k = 0;         // keep the k most likely tokens (ties at the k-th value kept); 0: off
  double top_p = 1.0;        // keep the most likely tokens until their mass reaches top_p; 1: off
  double min_p = 0.0;        // drop tokens less likely than min_p times the most likely one; 0: off
};

// logits: [T, V] -> [T, V] probabilities (float64 for float64 logits, else float32): the softmax of the
// warped logits, 0 for every removed token. -inf logits are removed tokens; a row with a NaN or +inf,
// or with no finite logit, raises an error naming the row.
at::Tensor warped_probabilities(const at::Tensor& logits, const SamplingParams& params);

// probs: [T, V] rows of nonnegative weights (need not sum to 1); uniforms: [T] float64 in [0, 1)
// -> [T] int64: per row the first token whose cumulative weight exceeds u * (row sum).
at::Tensor sample_rows(const at::Tensor& probs, const at::Tensor& uniforms);

// p: [k + 1, V] target probabilities of the verify rows; q: [k, V] the drafts' own probabilities (rows of
// lookup drafts are not read); drafts: [k] int64; lookup: [k] bool, true for a draft proposed
// deterministically; uniforms: [k + 1] float64 in [0, 1): u_i tests draft i, u_k draws the replacement or
// bonus token. -> ([2] int64: (accepted drafts, the token after them), [k] float64: min(1, p_i / q_i) of
// each draft the test reached (the kept ones and the first rejected one), NaN past it), on p's device.
std::pair<at::Tensor, at::Tensor> speculative_accept(const at::Tensor& p, const at::Tensor& q,
                                                     const at::Tensor& drafts, const at::Tensor& lookup,
                                                     const at::Tensor& uniforms);

// For the exactness test: the distribution [V] of the token a round emits at a position where draft x
// was proposed, from the same acceptance probability and residual the sampler uses. p, q: [V] float64
// (q undefined for a lookup draft).
at::Tensor accept_output_distribution(const at::Tensor& p, const at::Tensor& q, int64_t x);

}  // namespace dotf
