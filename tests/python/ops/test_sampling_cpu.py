"""argmax_top1 on the CPU (the vectorized float32 path and the scalar path of other dtypes) against
torch: first index of the maximum, top-1 softmax probability, -1 for rows with NaN or +inf or nothing but
-inf (-inf is a removed token, e.g. a logit the LM-head screen left out)."""
from __future__ import annotations

import pytest
import torch

from dotf import _C


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("vocab", [1, 5, 8, 9, 49152, 151937])
def test_matches_torch(dtype, vocab):
    g = torch.Generator().manual_seed(vocab)
    x = (torch.randn(4, vocab, generator=g) * 3).to(dtype)
    if vocab > 2:  # a tie for the maximum: the first index wins, as in torch.argmax
        x[1, vocab // 2] = x[1, vocab - 1] = x[1].max() + 1
    ids, probs = _C.testing.ops.argmax_top1(x, True)
    assert torch.equal(ids, x.argmax(-1))
    ref = torch.softmax(x.double(), -1).max(-1).values
    torch.testing.assert_close(probs.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonfinite_rows_give_minus_one(dtype):
    x = torch.randn(5, 1001, dtype=dtype)
    x[1, 3] = float("nan")
    x[2, 1000] = float("inf")   # in the scalar tail of the vector loop
    x[3].fill_(-float("inf"))
    ids, _ = _C.testing.ops.argmax_top1(x, True)
    assert ids.tolist()[1:4] == [-1, -1, -1] and ids[0] == x[0].argmax()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("with_prob", [True, False])
def test_minus_inf_is_a_removed_token(dtype, with_prob):
    """-inf entries take no part: the argmax and top-1 probability of the finite entries alone."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(3, 1001, generator=g) * 3).to(dtype)
    x[0, :500] = -float("inf")            # the first entries (the vector loop's start) removed
    x[1, ::2] = -float("inf")
    x[2, :] = -float("inf")
    x[2, 1000] = 1.5                      # one finite entry, in the scalar tail
    ids, probs = _C.testing.ops.argmax_top1(x, with_prob)
    assert torch.equal(ids, x.argmax(-1))
    if with_prob:
        ref = torch.softmax(x.double(), -1).max(-1).values
        torch.testing.assert_close(probs.double(), ref, rtol=1e-5, atol=1e-6)
        assert probs[2] == 1.0


# ---- top1_margin: the margin draft exit's confidence ----------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("vocab", [2, 5, 8, 9, 17, 49152])
def test_margin_is_top1_minus_runner_up(dtype, vocab):
    g = torch.Generator().manual_seed(vocab + 1)
    x = (torch.randn(5, vocab, generator=g) * 3).to(dtype)
    x[2, 0] = x[2].max() + 2   # the maximum first, in the vector loop, and last (scalar tail)
    x[3, vocab - 1] = x[3].max() + 0.5
    ids, _ = _C.testing.ops.argmax_top1(x, False)
    top2 = x.double().topk(2, dim=-1).values
    torch.testing.assert_close(_C.testing.ops.top1_margin(x, ids).double(), top2[:, 0] - top2[:, 1], rtol=1e-6, atol=1e-6)


def test_margin_edge_cases():
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [0.5, 0.0, 0.0, 0.0], [1.0, float("nan"), 0.0, 2.0]])
    ids, _ = _C.testing.ops.argmax_top1(x, False)
    assert ids.tolist() == [1, 0, -1]
    assert _C.testing.ops.top1_margin(x, ids).tolist() == [0.0, 0.5, 0.0]  # a tie, a clear winner, a non-finite row
    one = torch.tensor([[4.0], [-1.0]])
    assert _C.testing.ops.top1_margin(one, torch.zeros(2, dtype=torch.long)).tolist() == [float("inf")] * 2
    with pytest.raises(ValueError, match="outside the vocabulary"):
        _C.testing.ops.top1_margin(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="ids must be"):
        _C.testing.ops.top1_margin(x, torch.tensor([0, 1]))
