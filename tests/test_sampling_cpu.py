"""argmax_top1 on the CPU (the vectorized float32 path and the scalar path of other dtypes) against
torch: first index of the maximum, top-1 softmax probability, -1 for rows with NaN or inf."""
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
    ids, probs = _C.ops.argmax_top1(x, True)
    assert torch.equal(ids, x.argmax(-1))
    ref = torch.softmax(x.double(), -1).max(-1).values
    torch.testing.assert_close(probs.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonfinite_rows_give_minus_one(dtype):
    x = torch.randn(4, 1000, dtype=dtype)
    x[1, 3] = float("nan")
    x[2, 999] = float("inf")   # in the scalar tail of the vector loop
    x[3, 16] = -float("inf")
    ids, _ = _C.ops.argmax_top1(x, True)
    assert ids.tolist()[1:] == [-1, -1, -1] and ids[0] == x[0].argmax()
