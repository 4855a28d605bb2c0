"""The draft's int8 KV mirror (csrc/ops/attention_int8.cpp): quantization of cache rows and attention
over them, the fused float kernel (csrc/ops/cpu/attention_avx2.cpp, the mirror's rows widened exactly)
against a float64 reference. The integer VNNI kernel, which also quantizes queries and weights, has its
accuracy tests in test_attention_int8_vnni.py; the properties both keep run here for both (`int8_kernel`).

Two references: the float64 attention over the dequantized rows (what the kernel computes: only
float32 rounding apart) and the float64 attention over the exact rows (the quantization error the
draft accepts). Beyond accuracy the kernel keeps the exact kernel's properties: batch invariance and
no reads past a row's own position.
"""
from __future__ import annotations

import pytest
import torch

from dotf import _C
from test_attention_cpu import case as exact_case  # the same seeded inputs as the exact kernel's tests

ops = _C.testing.ops

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DT_IDS = ["fp32", "bf16", "fp16"]
# Against the dequantized rows: float32 rounding (fp32), or mostly the output's own rounding.
TOL = {torch.float32: 2e-6, torch.bfloat16: 6e-3, torch.float16: 1e-3}


def fused_available() -> bool:
    return ops.fused_int8_attention_supports(torch.zeros(1, 1, 8))


def use_int8_kernel(kernel: str):
    """Pins the mirror's CPU attention kernel: "float" (rows widened exactly) or "vnni" (integer; skips
    where the CPU lacks AVX-512 VNNI). Restored by the fixtures below."""
    if kernel == "vnni" and not ops.cpu_has_avx512_vnni():
        pytest.skip("this CPU lacks AVX-512 VNNI: only the float kernel can run")
    ops.set_int8_attention_vnni(kernel == "vnni")


@pytest.fixture
def float_int8_kernel():
    """The float kernel, whose result is the dequantized rows' attention up to float32 rounding."""
    use_int8_kernel("float")
    yield
    ops.set_int8_attention_vnni(True)


@pytest.fixture
def vnni_int8_kernel():
    """The integer kernel (skips where the CPU lacks AVX-512 VNNI): test_attention_int8_vnni.py."""
    use_int8_kernel("vnni")
    yield
    ops.set_int8_attention_vnni(True)


@pytest.fixture(params=["float", "vnni"])
def int8_kernel(request):
    """Each of the mirror's CPU kernels in turn, for properties both keep."""
    use_int8_kernel(request.param)
    yield request.param
    ops.set_int8_attention_vnni(True)


def mirror(k, v):
    """The int8 mirror of exact rows [capacity, KVH, D]: (k_q, v_q, k_scale, v_scale), all rows quantized."""
    capacity, kvh, d = k.shape
    k_q = torch.empty(kvh, capacity, d, dtype=torch.int8)
    v_q = torch.empty_like(k_q)
    k_s = torch.empty(kvh, capacity, dtype=torch.float32)
    v_s = torch.empty_like(k_s)
    ops.quantize_kv_rows(k, v, 0, capacity, k_q, v_q, k_s, v_s)
    return k_q, v_q, k_s, v_s


def case(dtype, heads, kv_heads, head_dim, keys, tokens, q_scale=1.0):
    """The exact attention tests' case (rows past `keys` hold NaN) plus its mirror (NaN scale there)."""
    q, k, v, start, scale = exact_case(dtype, heads, kv_heads, head_dim, keys, tokens, q_scale)
    return q, k, v, mirror(k, v), start, scale


def dequantized(x_q, scale, rows):
    """[KVH, capacity, D] int8 and [KVH, capacity] scales -> [rows, KVH, D] float64."""
    return (x_q[:, :rows].double() * scale[:, :rows].double().unsqueeze(-1)).permute(1, 0, 2).contiguous()


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), "NaN/inf in the output (a masked key was read?)"
    return ((out - ref).norm() / ref.norm()).item()


def test_quantization_is_per_row_symmetric_with_half_step_error():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(10, 3, 64, generator=g) * torch.logspace(-3, 2, 10).view(10, 1, 1)  # rows of very different size
    v = torch.randn(10, 3, 64, generator=g)
    k[4, 1] = 0.0  # an all-zero row: scale 0, values 0
    k_q, v_q, k_s, v_s = mirror(k, v)
    amax = k.abs().amax(-1).permute(1, 0)  # [KVH, rows]
    torch.testing.assert_close(k_s, amax / 127, rtol=1e-6, atol=0)
    assert k_q.abs().max() == 127 and k_s[1, 4] == 0 and (k_q[1, 4] == 0).all()
    err = (dequantized(k_q, k_s, 10) - k.double()).abs()
    assert (err <= k_s.permute(1, 0).double().unsqueeze(-1) * 0.5 * (1 + 1e-5)).all()
    torch.testing.assert_close(dequantized(v_q, v_s, 10).float(), v, rtol=0, atol=v.abs().max().item() / 254 * 1.01)


def test_quantize_writes_only_the_given_rows_and_marks_nonfinite_rows():
    g = torch.Generator().manual_seed(1)
    k = torch.randn(12, 2, 16, generator=g)
    v = torch.randn(12, 2, 16, generator=g)
    v[7, 0, 3] = float("inf")
    k_q = torch.full((2, 12, 16), 5, dtype=torch.int8)
    v_q = k_q.clone()
    k_s = torch.full((2, 12), -1.0)
    v_s = k_s.clone()
    ops.quantize_kv_rows(k, v, 6, 3, k_q, v_q, k_s, v_s)
    assert (k_q[:, :6] == 5).all() and (k_q[:, 9:] == 5).all() and (k_s[:, :6] == -1).all()
    assert torch.isnan(v_s[0, 7]) and torch.isfinite(v_s[1, 7]) and torch.isfinite(k_s[:, 6:9]).all()
    with pytest.raises(RuntimeError, match="capacity"):
        ops.quantize_kv_rows(k, v, 10, 3, k_q, v_q, k_s, v_s)


needs_avx2 = pytest.mark.skipif(not fused_available(), reason="this CPU lacks AVX2/FMA/F16C")


@needs_avx2
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (9, 3), (14, 2)])
@pytest.mark.parametrize("head_dim", [8, 64, 128])
# keys straddle the kernel's 64-key tiles: below one, one exactly plus one, several plus a remainder
@pytest.mark.parametrize("keys,tokens", [(1, 1), (2, 2), (33, 13), (65, 1), (129, 5), (1000, 9), (1000, 64)])
def test_matches_float64_reference(dtype, heads, kv_heads, head_dim, keys, tokens, float_int8_kernel):
    q, _, _, (k_q, v_q, k_s, v_s), start, scale = case(dtype, heads, kv_heads, head_dim, keys, tokens)
    out = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale)
    assert out.shape == (tokens, heads * head_dim) and out.dtype == dtype
    ref = ops.attention_with_cache_reference(q.double(), dequantized(k_q, k_s, keys), dequantized(v_q, v_s, keys),
                                             start, scale)
    assert rel_err(out, ref) <= TOL[dtype]


@pytest.mark.parametrize("heads,kv_heads,keys,tokens", [(9, 3, 300, 5), (14, 2, 2000, 9)])
def test_quantization_error_against_the_exact_rows_is_small(heads, kv_heads, keys, tokens, float_int8_kernel):
    # What the draft gives up: about 1% of the output, far below what changes a confident top-1 token.
    q, k, v, (k_q, v_q, k_s, v_s), start, scale = case(torch.float32, heads, kv_heads, 64, keys, tokens)
    out = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale)
    ref = ops.attention_with_cache_reference(q.double(), k[:keys].double(), v[:keys].double(), start, scale)
    assert rel_err(out, ref) <= 0.02


@needs_avx2
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("keys,tokens", [(13, 13), (300, 9), (2048, 13)])
def test_rows_are_batch_invariant(dtype, keys, tokens, int8_kernel):
    q, _, _, (k_q, v_q, k_s, v_s), start, scale = case(dtype, 9, 3, 64, keys, tokens)
    together = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale)
    for t in range(tokens):
        alone = ops.int8_attention_with_cache(q[t:t + 1], k_q, v_q, k_s, v_s, start + t, scale)
        assert torch.equal(together[t:t + 1], alone), f"row {t} depends on the batch"


@needs_avx2
def test_nonfinite_later_row_does_not_reach_earlier_rows(int8_kernel):
    q, k, v, _, start, scale = case(torch.float32, 9, 3, 64, 70, 4)
    v[69, 1] = float("nan")  # the last new position, one KV head
    k_q, v_q, k_s, v_s = mirror(k, v)
    out = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale).view(4, 9, 64)
    assert torch.isfinite(out[:3]).all() and torch.isnan(out[3, 3:6]).all() and torch.isfinite(out[3, :3]).all()


def test_unsupported_inputs_take_the_reference():
    # float64 (the losslessness proofs), head_dim not a multiple of 8, prefill-sized T.
    for dtype, head_dim, tokens in ((torch.float64, 64, 1), (torch.float32, 4, 3), (torch.float32, 64, 65)):
        q, _, _, (k_q, v_q, k_s, v_s), start, scale = case(dtype, 4, 2, head_dim, 70, tokens)
        assert torch.equal(ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale),
                           ops.int8_attention_with_cache_reference(q, k_q, v_q, k_s, v_s, start, scale))


def test_bad_mirror_is_refused():
    q, _, _, (k_q, v_q, k_s, v_s), start, scale = case(torch.float32, 4, 2, 16, 20, 2)
    with pytest.raises(TypeError, match="k_q must have dtype"):
        ops.int8_attention_with_cache(q, k_q.float(), v_q, k_s, v_s, start, scale)
    with pytest.raises(RuntimeError, match="capacity"):
        ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, 30, scale)


def test_device_start_is_read_on_the_cpu_too(int8_kernel):
    # A CUDA graph replay passes its position in a tensor (start is then its bound); the CPU reads it at once.
    q, k, v, (k_q, v_q, k_s, v_s), start, scale = case(torch.float32, 9, 3, 64, 300, 1)
    want = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, 120, scale, 0)
    got = ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, 0, torch.tensor([120]))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="device_start 300 must be in"):
        ops.int8_attention_with_cache(q, k_q, v_q, k_s, v_s, start, scale, 0, torch.tensor([300]))
    fresh = [torch.zeros_like(t) for t in (k_q, v_q, k_s, v_s)]
    ops.quantize_kv_rows(k, v, 250, 10, *fresh, torch.tensor([20]))  # rows [20, 30)
    assert torch.equal(fresh[0][:, 20:30], k_q[:, 20:30]) and (fresh[0][:, 30:] == 0).all()
