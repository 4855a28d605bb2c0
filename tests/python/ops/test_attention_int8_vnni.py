"""The int8 mirror's integer attention kernel (csrc/ops/cpu/attention_int8_vnni.cpp, AVX-512 VNNI): queries
quantized per (row, head) to int8 and softmax weights per (row, 64-key block) to uint8, on top of the
mirror's own int8 rows.

What it may give up is bounded here against two float64 references: the attention over the dequantized
mirror (the kernel's own additional rounding, about 0.8% of the output) and over the exact rows (what the
draft reads in all, about 1.2%; the float kernel's is about 0.9%). The properties the float kernel keeps
(batch invariance, no reads past a row's position, windows) run for both kernels in
test_attention_int8.py and test_attention_window.py.
"""
from __future__ import annotations

import pytest
import torch

from dotf import _C

from test_attention_int8 import DT_IDS, DTYPES, case, dequantized, mirror, rel_err
from test_attention_int8 import vnni_int8_kernel as vnni_kernel  # noqa: F401 (fixture)

ops = _C.testing.ops
pytestmark = pytest.mark.skipif(not ops.cpu_has_avx512_vnni(), reason="this CPU lacks AVX-512 VNNI: the int8 "
                                "mirror runs the float kernel (tested in test_attention_int8.py)")

SHAPES = [(9, 3, 64), (14, 2, 64), (4, 2, 128), (6, 3, 96)]  # heads, kv_heads, head_dim (multiples of 32)
# (keys, tokens, window): one row, rows within one block, verify sizes over many blocks, a window, a long
# context, a prefill chunk of the most rows the fused kernels take
CALLS = [(1, 1, 0), (33, 13, 0), (1000, 9, 0), (1000, 9, 100), (3000, 1, 0), (300, 64, 0), (2000, 5, 700)]


def run(q, mirror_rows, start, scale, window=0):
    k_q, v_q, k_s, v_s = mirror_rows
    return ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, window)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("keys,tokens,window", CALLS)
def test_error_is_bounded_against_both_references(dtype, heads, kv_heads, head_dim, keys, tokens, window,
                                                   vnni_kernel):
    q, k, v, (k_q, v_q, k_s, v_s), start, scale = case(dtype, heads, kv_heads, head_dim, keys, tokens)
    out = run(q, (k_q, v_q, k_s, v_s), start, scale, window)
    assert out.shape == (tokens, heads * head_dim) and out.dtype == dtype
    deq = ops.attention_with_cache_reference(q.double(), dequantized(k_q, k_s, keys), dequantized(v_q, v_s, keys),
                                             start, scale, window)
    exact = ops.attention_with_cache_reference(q.double(), k[:keys].double(), v[:keys].double(), start, scale,
                                               window)
    # One visible key: the weight is 1 whatever its rounding, so only the value rounding is left.
    assert rel_err(out, deq) <= (2e-3 if keys == 1 else 1.5e-2)
    assert rel_err(out, exact) <= 2e-2


def test_it_is_a_different_kernel_from_the_float_one(vnni_kernel):
    # The switch really changes kernels here (else the error bounds above would test the float kernel).
    q, _, _, rows, start, scale = case(torch.float32, 14, 2, 64, 500, 9)
    vnni = run(q, rows, start, scale)
    ops.set_int8_attention_vnni(False)
    assert not torch.equal(vnni, run(q, rows, start, scale))
    assert _C.build_info()["int8_attention_isa"] != "avx512_vnni"


@pytest.mark.parametrize("head_dim", [8, 80])
def test_head_dims_off_its_32_lanes_take_the_float_kernel(head_dim, vnni_kernel):
    q, _, _, rows, start, scale = case(torch.float32, 6, 3, head_dim, 200, 5)
    vnni_on = run(q, rows, start, scale)
    ops.set_int8_attention_vnni(False)
    assert torch.equal(vnni_on, run(q, rows, start, scale))


def test_a_dominant_key_leaves_the_long_tail_its_weight(vnni_kernel):
    # One key takes 91-100% of every row's weight and 3,999 share the rest, each under 1/500 of it. Its
    # value is zero, so the output is the tail alone: a single uint8 scale per row would round every tail
    # weight to 0 (error 1.0); one per 64-key block keeps them. The reference rounds the queries as the
    # kernel does (the dominant key's large score makes their rounding visible here), so what is left is
    # the weights' rounding.
    q, k, v, _, start, scale = case(torch.float32, 14, 2, 64, 4000, 1)
    k[0] = q[0].view(2, 7, 64).mean(1) * 20
    v[0] = 0.0
    k_q, v_q, k_s, v_s = mirror(k, v)
    out = run(q, (k_q, v_q, k_s, v_s), start, scale)
    x = q.double() * scale
    amax = x.abs().amax(-1, keepdim=True)
    q_rounded = (x * 127 / amax).round().clamp(-127, 127) * amax / 127 / scale
    ref = ops.attention_with_cache_reference(q_rounded, dequantized(k_q, k_s, 4000), dequantized(v_q, v_s, 4000),
                                             start, scale)
    assert ref.norm() > 0 and rel_err(out, ref) <= 1.5e-2
