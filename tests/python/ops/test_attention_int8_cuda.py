"""The int8 KV mirror's CUDA kernels (csrc/ops/cuda/attention_int8.cu) against the CPU's.

Quantization: the CUDA rows equal the CPU's bit for bit (the same float32 operations: max|x|, 127 / max,
round half to even), non-finite rows included. Attention: against the float64 reference over the
dequantized rows, with and without a window, one to many query rows, split and unsplit grids, and
through device_start (a CUDA graph replay's position). Skipped without a CUDA device or a CUDA build.
"""
from __future__ import annotations

import pytest
import torch

from dotf import _C

from test_attention_int8 import TOL, case, dequantized, mirror, rel_err

from test_cuda_ops import DT_IDS, DTYPES, pytestmark  # noqa: F401 (pytestmark: CUDA device and build)

ops = _C.testing.ops


def cuda_mirror(k, v, start=0, count=None, device_start=None):
    capacity, kvh, d = k.shape
    k_q = torch.zeros(kvh, capacity, d, dtype=torch.int8, device="cuda")
    v_q = torch.zeros_like(k_q)
    k_s = torch.zeros(kvh, capacity, dtype=torch.float32, device="cuda")
    v_s = torch.zeros_like(k_s)
    count = capacity - start if count is None else count
    ops.quantize_kv_rows(k.cuda(), v.cuda(), start, count, k_q, v_q, k_s, v_s, device_start)
    return k_q, v_q, k_s, v_s


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("kv_heads,head_dim", [(3, 64), (2, 128), (4, 16)])
def test_quantized_rows_equal_the_cpu_rows(dtype, kv_heads, head_dim):
    _, k, v, _, _, _ = case(dtype, kv_heads * 2, kv_heads, head_dim, 70, 3)  # rows past 70 hold NaN
    k[5, 0, 7] = float("inf")  # non-finite rows: zeros and scale NaN on both devices
    v[9, kv_heads - 1, 0] = float("nan")
    for name, want, have in zip(("k_q", "v_q", "k_scale", "v_scale"), mirror(k, v), cuda_mirror(k, v)):
        have = have.cpu()
        if want.is_floating_point():
            assert torch.equal(want.isnan(), have.isnan()), name
            want, have = want.nan_to_num(0), have.nan_to_num(0)
        assert torch.equal(want, have), name


def test_quantize_reads_its_start_from_device_start():
    q, k, v, _, start, scale = case(torch.float32, 6, 3, 64, 40, 1)
    want = cuda_mirror(k, v, start=10, count=5)
    # Sized for start 30, replayed at 10: the kernel reads the device copy.
    got = cuda_mirror(k, v, start=30, count=5, device_start=torch.tensor([10], device="cuda"))
    for a, b in zip(want, got):
        assert torch.equal(a.nan_to_num(0), b.nan_to_num(0))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(9, 3, 64), (14, 2, 64), (32, 8, 128), (4, 4, 16)])
# one draft row to verify-sized passes; short caches (one split) to long ones (several); windows
# shorter than a tile, straddling the split chunks, and longer than the context
@pytest.mark.parametrize("keys,tokens,window", [(40, 1, 0), (40, 5, 0), (3000, 1, 0), (3000, 9, 0), (5000, 16, 0),
                                                (40, 1, 8), (40, 5, 8), (3000, 1, 256), (3000, 9, 1000),
                                                (5000, 16, 33), (50, 2, 100)])
def test_attention_matches_the_reference(dtype, heads, kv_heads, head_dim, keys, tokens, window):
    q, k, v, _, start, scale = case(dtype, heads, kv_heads, head_dim, keys, tokens)
    k_q, v_q, k_s, v_s = cuda_mirror(k, v, 0, keys)  # rows past `keys` stay zero with scale 0
    out = ops.int8_attention_with_cache(q.cuda(), k_q, v_q, k_s, v_s, start, scale, window)
    ref = ops.attention_with_cache_reference(q.double(), dequantized(k_q.cpu(), k_s.cpu(), keys),
                                             dequantized(v_q.cpu(), v_s.cpu(), keys), start, scale, window)
    assert rel_err(out.cpu(), ref) <= max(TOL[dtype], 1e-5)


def test_attention_never_reads_past_a_rows_position():
    q, k, v, _, start, scale = case(torch.float32, 9, 3, 64, 300, 9)
    k_q, v_q, k_s, v_s = cuda_mirror(k, v, 0, 300)
    k_s[:, 300:] = float("nan")  # the rows a later (rejected) draft would have written
    v_s[:, 300:] = float("nan")
    out = ops.int8_attention_with_cache(q.cuda(), k_q, v_q, k_s, v_s, start, scale, 0)
    assert torch.isfinite(out).all()
    # Row 0 of the pass alone: the same keys, so the same numbers up to float32 rounding.
    one = ops.int8_attention_with_cache(q[:1].cuda(), k_q, v_q, k_s, v_s, start, scale, 0)
    torch.testing.assert_close(out[:1], one, rtol=1e-5, atol=1e-6)


def test_attention_reads_its_start_from_device_start():
    q, k, v, _, start, scale = case(torch.float32, 9, 3, 64, 2000, 1)
    k_q, v_q, k_s, v_s = cuda_mirror(k, v, 0, 2000)
    for window in (0, 128):
        want = ops.int8_attention_with_cache(q.cuda(), k_q, v_q, k_s, v_s, 1200, scale, window)
        got = ops.int8_attention_with_cache(q.cuda(), k_q, v_q, k_s, v_s, start, scale, window,
                                            torch.tensor([1200], device="cuda"))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_mismatched_devices_are_refused():
    q, k, v, (k_q, v_q, k_s, v_s), start, scale = case(torch.float32, 9, 3, 64, 40, 1)
    with pytest.raises(ValueError, match="mirror"):
        ops.int8_attention_with_cache(q.cuda(), k_q, v_q, k_s, v_s, start, scale, 0)
