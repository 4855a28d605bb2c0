"""The fused CPU attention kernel (csrc/ops/cpu/attention_avx2.cpp) against the ATen reference.

Fresh random inputs per case; errors as ||out - ref|| / ||ref|| against a float64 reference of the
same (rounded) inputs. Beyond accuracy, the kernel owes the speculative decoder two exact properties:
a row's result never depends on how many rows were computed with it (batch invariance), and cache
rows past a row's own position are never read (a NaN cached for a rejected draft cannot leak).
"""
from __future__ import annotations

import math
import zlib

import pytest
import torch

from dotf import _C

ops = _C.testing.ops

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DT_IDS = ["fp32", "bf16", "fp16"]
# fp32: rounding of a float32 softmax; bf16/fp16: mostly the one rounding of the output.
TOL = {torch.float32: 2e-6, torch.bfloat16: 6e-3, torch.float16: 1e-3}


def fused_available() -> bool:
    return ops.fused_attention_supports(torch.zeros(1, 1, 8), torch.zeros(1, 1, 8))


pytestmark = pytest.mark.skipif(not fused_available(), reason="this CPU lacks AVX2/FMA/F16C")


def case(dtype, heads, kv_heads, head_dim, keys, tokens, q_scale=1.0):
    """q at positions keys-tokens..keys-1 over a cache whose rows past `keys` hold NaN."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((dtype, heads, kv_heads, head_dim, keys, tokens)).encode()))
    capacity = keys + 7
    q = (torch.randn(tokens, heads, head_dim, generator=g) * q_scale).to(dtype)
    k = torch.full((capacity, kv_heads, head_dim), float("nan")).to(dtype)
    v = k.clone()
    k[:keys] = torch.randn(keys, kv_heads, head_dim, generator=g).to(dtype)
    v[:keys] = torch.randn(keys, kv_heads, head_dim, generator=g).to(dtype)
    return q, k, v, keys - tokens, 1.0 / math.sqrt(head_dim)


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), "NaN/inf in the output (a masked key was read?)"
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (9, 3), (14, 2), (32, 8)])
@pytest.mark.parametrize("head_dim", [8, 64, 96, 128])
@pytest.mark.parametrize("keys,tokens", [(1, 1), (2, 2), (33, 1), (33, 13), (129, 5), (1000, 1), (1000, 64)])
def test_matches_reference(dtype, heads, kv_heads, head_dim, keys, tokens):
    q, k, v, start, scale = case(dtype, heads, kv_heads, head_dim, keys, tokens)
    assert ops.fused_attention_supports(q, k)
    out = ops.attention_with_cache_cpu(q, k, v, start, scale)
    assert out.shape == (tokens, heads * head_dim) and out.dtype == dtype
    ref = ops.attention_with_cache_reference(q.double(), k[:keys].double(), v[:keys].double(), start, scale)
    assert rel_err(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_peaked_scores_do_not_overflow(dtype):
    q, k, v, start, scale = case(dtype, 8, 2, 128, 700, 9, q_scale=30.0)
    out = ops.attention_with_cache_cpu(q, k, v, start, scale)
    ref = ops.attention_with_cache_reference(q.double(), k[:700].double(), v[:700].double(), start, scale)
    assert rel_err(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("keys,tokens", [(13, 13), (300, 9), (2048, 13)])
def test_rows_are_batch_invariant(dtype, keys, tokens):
    # Verify (T = k+1 rows) must reproduce, bit for bit, what T separate decoding steps compute.
    q, k, v, start, scale = case(dtype, 9, 3, 64, keys, tokens)
    together = ops.attention_with_cache_cpu(q, k, v, start, scale)
    for t in range(tokens):
        alone = ops.attention_with_cache_cpu(q[t:t + 1], k, v, start + t, scale)
        assert torch.equal(together[t:t + 1], alone), f"row {t} depends on the batch"


def test_thread_count_does_not_change_results():
    q, k, v, start, scale = case(torch.float32, 14, 2, 64, 1500, 9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.attention_with_cache_cpu(q, k, v, start, scale)
        torch.set_num_threads(2)
        two = ops.attention_with_cache_cpu(q, k, v, start, scale)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_nonfinite_later_row_does_not_reach_earlier_rows():
    # Row t sees keys [0, start + t]: a NaN value at the last new position poisons only the last row.
    q, k, v, start, scale = case(torch.float32, 9, 3, 64, 40, 4)
    v[39] = float("nan")
    out = ops.attention_with_cache_cpu(q, k, v, start, scale)
    assert torch.isfinite(out[:3]).all() and torch.isnan(out[3]).all()


def test_noncontiguous_query():
    q, k, v, start, scale = case(torch.float32, 9, 3, 64, 50, 4)
    q_nc = q.transpose(0, 1).contiguous().transpose(0, 1)
    assert not q_nc.is_contiguous()
    assert torch.equal(ops.attention_with_cache_cpu(q_nc, k, v, start, scale),
                       ops.attention_with_cache_cpu(q, k, v, start, scale))


def test_unsupported_inputs_take_the_reference():
    # float64 (the losslessness proofs), head_dim not a multiple of 8, prefill-sized T.
    for dtype, head_dim, tokens in ((torch.float64, 64, 1), (torch.float32, 4, 3), (torch.float32, 64, 65)):
        q, k, v, start, scale = case(dtype, 4, 2, head_dim, 70, tokens)
        assert not ops.fused_attention_supports(q, k)
        assert torch.equal(ops.attention_with_cache_cpu(q, k[:70], v[:70], start, scale),
                           ops.attention_with_cache_reference(q, k[:70], v[:70], start, scale))
