#pragma once
// Greedy acceptance of a speculative round, on the device that holds the ids, so that the host
// reads one tiny tensor per round instead of the verify pass's ids.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace dotf {

// drafts: [k] int64, the drafted tokens d1..dk (k may be 0)
// target: [k+1] int64, the full model's greedy ids after each verify input [last, d1..dk]
//         (argmax_top1 of the verify logits; -1 marks a non-finite row)
// returns: [2] int64 on the inputs' device: (accepted, bonus) where accepted is the length of the
// longest prefix with drafts[i] == target[i], and bonus = target[accepted], the full model's token
// after the accepted prefix. bonus is -1 when that row was non-finite: an error for the caller to
// report, never a token. Non-finite rows past the acceptance point are ignored, as plain decoding
// never computes them (a rejected draft token may be one the model cannot process).
at::Tensor greedy_accept(const at::Tensor& drafts, const at::Tensor& target);

// Raw-pointer CPU implementation, also the reference for the CUDA kernel.
// drafts: [k]; target: [k+1]; out: [2] = (accepted, bonus)
void greedy_accept_cpu(const int64_t* drafts, const int64_t* target, int64_t k, int64_t* out);

}  // namespace dotf
