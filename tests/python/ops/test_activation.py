"""silu(gate) * up (csrc/ops/activation.*): the CPU path is ATen's silu then the product; the CUDA
kernel must give the same bits as those two ATen ops on the GPU, in every dtype and shape."""
from __future__ import annotations

import pytest
import torch

from dotf import _C

ops = _C.testing.ops
HAS_CUDA = torch.cuda.is_available() and _C.build_info()["cuda"]
SHAPES = [(1, 1), (1, 7), (5, 1536), (3, 8960), (300, 576)]


def reference(gate_up: torch.Tensor) -> torch.Tensor:
    I = gate_up.shape[1] // 2
    return torch.nn.functional.silu(gate_up[:, :I]) * gate_up[:, I:]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"T{t}-I{i}" for t, i in SHAPES])
def test_silu_mul_cpu(dtype, shape):
    T, I = shape
    x = (torch.randn(T, 2 * I, generator=torch.Generator().manual_seed(T * I)) * 4).to(dtype)
    assert torch.equal(ops.silu_mul(x), reference(x))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"T{t}-I{i}" for t, i in SHAPES])
def test_silu_mul_cuda_matches_aten_bit_for_bit(dtype, shape):
    T, I = shape
    x = (torch.randn(T, 2 * I, generator=torch.Generator().manual_seed(T + I)) * 4).to(dtype).cuda()
    x[0, 0] = -100.0  # exp overflow side: silu -> -0
    out = ops.silu_mul(x)
    assert out.shape == (T, I) and out.dtype == dtype and torch.isfinite(out).all()
    assert torch.equal(out, reference(x))


def test_silu_mul_bad_input():
    with pytest.raises(TypeError, match="gate_up"):
        ops.silu_mul(torch.randn(4))
    with pytest.raises(ValueError, match="even"):
        ops.silu_mul(torch.randn(2, 5))
