"""The draft's attention window (ops/attention.h, kAttentionSinks; option draft_window): a row at position
p sees keys [0, 4) and (p - window, p] only.

The reference is checked against plain attention over the gathered visible keys (an independent
construction); the fused kernels, exact rows and int8 mirror, against the reference in float64; and a
window at least as long as the context changes nothing, bit for bit.
"""
from __future__ import annotations

import pytest
import torch

from dotf import _C

from test_attention_cpu import DT_IDS, DTYPES, TOL, case, fused_available, rel_err
from test_attention_int8 import dequantized, float_int8_kernel, int8_kernel, mirror  # noqa: F401 (fixtures)

ops = _C.testing.ops
SINKS = 4
needs_avx2 = pytest.mark.skipif(not fused_available(), reason="this CPU lacks AVX2/FMA/F16C")


def visible(position: int, window: int) -> list[int]:
    return [s for s in range(position + 1) if s < SINKS or s > position - window]


@pytest.mark.parametrize("keys,tokens,window", [(40, 1, 8), (40, 3, 8), (300, 5, 64), (300, 1, 1), (12, 2, 30)])
def test_reference_attends_exactly_the_sinks_and_the_window(keys, tokens, window):
    q, k, v, start, scale = case(torch.float64, 9, 3, 64, keys, tokens)
    out = ops.attention_with_cache_reference(q, k[:keys], v[:keys], start, scale, window)
    for t in range(tokens):
        idx = torch.tensor(visible(start + t, window))
        # One query at the last of the gathered rows sees exactly them. (The reference's softmax runs in
        # float32, as transformers' does: rows of different length round apart by ~1e-7; a key wrongly
        # seen or hidden moves the output by ~1e-1.)
        want = ops.attention_with_cache_reference(q[t:t + 1], k[idx], v[idx], len(idx) - 1, scale)
        torch.testing.assert_close(out[t:t + 1], want, rtol=0, atol=1e-5)


@needs_avx2
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (14, 2)])
# windows shorter than a key block, straddling blocks, and longer than the context
@pytest.mark.parametrize("keys,tokens,window", [(40, 1, 8), (40, 5, 8), (300, 1, 33), (1000, 9, 256),
                                                (1000, 1, 999), (2000, 64, 500), (50, 2, 100)])
def test_fused_window_matches_reference(dtype, heads, kv_heads, keys, tokens, window):
    q, k, v, start, scale = case(dtype, heads, kv_heads, 64, keys, tokens)
    out = ops.attention_with_cache_cpu(q, k, v, start, scale, window)
    ref = ops.attention_with_cache_reference(q.double(), k[:keys].double(), v[:keys].double(), start, scale, window)
    assert rel_err(out, ref) <= TOL[dtype]


@needs_avx2
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("keys,tokens,window", [(40, 5, 8), (1000, 9, 256), (2000, 13, 500)])
def test_fused_int8_window_matches_reference(dtype, keys, tokens, window, float_int8_kernel):
    q, k, v, start, scale = case(dtype, 9, 3, 64, keys, tokens)
    k_q, v_q, k_s, v_s = mirror(k, v)
    out = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, window)
    ref = ops.attention_with_cache_reference(q.double(), dequantized(k_q, k_s, keys), dequantized(v_q, v_s, keys),
                                             start, scale, window)
    assert rel_err(out, ref) <= TOL[dtype]
    assert torch.equal(out, ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, window))


@needs_avx2
@pytest.mark.parametrize("keys,tokens", [(40, 1), (300, 9)])
def test_a_window_covering_the_context_changes_nothing(keys, tokens, int8_kernel):
    q, k, v, start, scale = case(torch.float32, 9, 3, 64, keys, tokens)
    k_q, v_q, k_s, v_s = mirror(k, v)
    for window in (keys - SINKS, keys, 10 * keys):
        assert torch.equal(ops.attention_with_cache_cpu(q, k, v, start, scale, window),
                           ops.attention_with_cache_cpu(q, k, v, start, scale))
        assert torch.equal(ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, window),
                           ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale))


@needs_avx2
def test_hidden_keys_are_never_read(int8_kernel):
    # NaN in every key the window hides: a read would turn the output NaN.
    q, k, v, start, scale = case(torch.float32, 9, 3, 64, 500, 3)
    k[SINKS:start - 100], v[SINKS:start - 100] = float("nan"), float("nan")
    out = ops.attention_with_cache_cpu(q, k, v, start, scale, 100)
    assert torch.isfinite(out).all()
    k_q, v_q, k_s, v_s = mirror(k, v)
    assert torch.isfinite(ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, 100)).all()


def test_negative_window_is_refused():
    q, k, v, start, scale = case(torch.float32, 4, 2, 64, 20, 1)
    with pytest.raises(ValueError, match="window must be >= 0"):
        ops.attention_with_cache_cpu(q, k, v, start, scale, -1)
