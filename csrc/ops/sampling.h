#pragma once
// Greedy token choice and the draft-exit confidence in one pass over the vocabulary: the argmax and
// its softmax probability 1 / sum(exp(l - max)), without materialising the softmax.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace dotf {

// logits: [T, V] -> (ids [T] int64, top-1 probability [T] float32; 0 when with_prob is false,
// which skips the exp pass that only the draft-exit test needs).
// A row holding NaN or +inf, or nothing but -inf, gets id -1 so that callers can report it instead of
// emitting garbage. -inf marks a removed token, as in warped_probabilities (ops/sample.h): the logits
// an LM-head screen left out (ForwardOptions::logits_top_k).
std::pair<at::Tensor, at::Tensor> argmax_top1(const at::Tensor& logits, bool with_prob = true);

// logits: [T, V], ids: [T] int64 (argmax_top1's ids) -> [T] float32: logits[r, ids[r]] minus the
// largest other logit of row r (0 on a tie, +inf for V = 1, 0 for a row whose id is -1). The
// draft-exit confidence of a quantized self-draft (bench/README.md, "Choosing the defaults"): it
// disagrees with the full model only where its top two logits are closer than its rounding moves them.
at::Tensor top1_margin(const at::Tensor& logits, const at::Tensor& ids);

// Raw-pointer CPU implementation of argmax_top1, also the reference for the CUDA kernel.
// logits: [rows, vocab]; ids: [rows]; probs: [rows] (0 when with_prob is false)
template <typename scalar_t>
void argmax_top1_cpu(const scalar_t* logits, int64_t rows, int64_t vocab, int64_t* ids, float* probs, bool with_prob);

}  // namespace dotf
