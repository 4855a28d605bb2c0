"""The fused attention kernel's AVX512VL build (csrc/ops/cpu/attention_avx512.cpp) against its AVX2 build
on the same CPU: four query rows per key load and three per value load instead of two and one, but the
same chain of operations for every row, so the same bits -- over the exact cache and the int8 mirror (its
float kernel; the integer VNNI kernel is tested in test_attention_int8_vnni.py),
every storage dtype, GQA groups of 1, 3 and 7, windows, and row counts that leave partial row groups
(a verify of 5 or 9 tokens, a decode step, a prefill chunk).
"""
from __future__ import annotations

import pytest
import torch

from dotf import _C

from test_attention_cpu import DT_IDS, DTYPES, case, fused_available
from test_attention_int8 import float_int8_kernel, mirror  # noqa: F401 (fixture)

ops = _C.testing.ops
pytestmark = pytest.mark.skipif(not (fused_available() and ops.cpu_has_avx512vl()),
                                reason="this CPU lacks AVX-512 F/VL: only the AVX2 build can run")

SHAPES = [(9, 3, 64), (14, 2, 64), (8, 8, 64), (4, 2, 128), (6, 3, 80)]  # heads, kv_heads, head_dim
# (keys, tokens, window): one row, verify sizes, rows of different key counts in one group, a window
# shorter than a key block and one straddling blocks, a window longer than the context
CALLS = [(1, 1, 0), (37, 1, 0), (300, 5, 0), (513, 9, 0), (130, 17, 0), (300, 9, 33), (1000, 5, 256),
         (40, 3, 8), (50, 2, 100)]


def both_builds(run):
    """run() with the AVX512VL build, then with the AVX2 build."""
    try:
        ops.set_avx512_kernels(True)
        wide = run()
        ops.set_avx512_kernels(False)
        narrow = run()
    finally:
        ops.set_avx512_kernels(True)
    return wide, narrow


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("keys,tokens,window", CALLS)
def test_exact_cache_builds_agree_bit_for_bit(dtype, heads, kv_heads, head_dim, keys, tokens, window):
    q, k, v, start, scale = case(dtype, heads, kv_heads, head_dim, keys, tokens)
    wide, narrow = both_builds(lambda: ops.attention_with_cache_cpu(q, k, v, start, scale, window))
    assert torch.isfinite(wide.float()).all()
    assert torch.equal(wide, narrow)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("keys,tokens,window", CALLS)
def test_int8_mirror_builds_agree_bit_for_bit(dtype, heads, kv_heads, head_dim, keys, tokens, window,
                                              float_int8_kernel):
    q, k, v, start, scale = case(dtype, heads, kv_heads, head_dim, keys, tokens)
    k_q, v_q, k_s, v_s = mirror(k, v)
    wide, narrow = both_builds(lambda: ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, window))
    assert torch.isfinite(wide.float()).all()
    assert torch.equal(wide, narrow)


def test_builds_differ_in_nothing_but_speed_on_a_real_step_shape():
    """A 9-row verify at 2,000 cached positions, Qwen2.5-0.5B's heads (14 query, 2 KV: 63 rows per KV
    head, so every row group is full), also row by row: each row equals the one-row call of either build."""
    q, k, v, start, scale = case(torch.float32, 14, 2, 64, 2000, 9)
    wide, narrow = both_builds(lambda: ops.attention_with_cache_cpu(q, k, v, start, scale))
    assert torch.equal(wide, narrow)
    for t in (0, 4, 8):
        alone, _ = both_builds(lambda: ops.attention_with_cache_cpu(q[t:t + 1], k, v, start + t, scale))
        assert torch.equal(alone, wide[t:t + 1])
