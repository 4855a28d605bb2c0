"""CUDA kernels vs their CPU references (dotf._C.testing.ops), over parametrized grids.

Every case draws fresh random inputs, poisons the memory the op's outputs will be carved from
(the caching allocator's free blocks are filled with 0xFF bytes: NaN in every float format), and
compares with ||out - ref|| / ||ref|| thresholds per dtype, or exactly where the arithmetic is the
same operation for operation. Skipped without a CUDA device or a CUDA build of dotf.
"""
from __future__ import annotations

import math
import zlib

import pytest
import torch

from dotf import _C

ops = _C.testing.ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not _C.build_info()["cuda"], reason="dotf was built without CUDA kernels"),
]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DT_IDS = ["fp32", "bf16", "fp16"]
DEV = "cuda"


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all(), "output holds NaN/inf (an element left unwritten?)"
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def poison_allocator() -> None:
    """Fill every free block of the CUDA caching allocator with 0xFF bytes.

    Outputs the op allocates (at::empty) are then carved out of poisoned memory, so an element the
    kernel forgets to write reads as NaN (float formats) or -1 (int64) instead of a lucky zero."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    # Small pool (<= 1 MiB requests, 2 MiB segments) and large pool (bigger requests).
    blocks = [torch.full((1 << 17,), -1, dtype=torch.int64, device=DEV) for _ in range(16)]  # 16 x 1 MiB
    blocks += [torch.full((n,), -1, dtype=torch.int64, device=DEV) for n in (1 << 20, 1 << 21, 1 << 22)]
    torch.cuda.synchronize()
    del blocks


def seeded(*key) -> torch.Generator:
    """A generator seeded from the case's parameters: fresh inputs per case, reproducible per run."""
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


# ---------------------------------------------------------------------------------------------
# add_rmsnorm_cossim
# ---------------------------------------------------------------------------------------------
NORM_TOL = {torch.float32: 2e-5, torch.bfloat16: 4e-3, torch.float16: 1e-3}


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("rows", [1, 5, 13])
@pytest.mark.parametrize("cols", [64, 1000, 1536, 4096, 4100])
@pytest.mark.parametrize("with_delta", [True, False], ids=["add", "plain"])
def test_add_rmsnorm_cossim(dtype, rows, cols, with_delta):
    g = seeded("norm", dtype, rows, cols, with_delta)
    h = (torch.randn(rows, cols, generator=g) * 3).to(dtype)
    delta = (torch.randn(rows, cols, generator=g) * 0.5).to(dtype) if with_delta else None
    weight = (1 + 0.2 * torch.randn(cols, generator=g)).to(dtype)
    eps = 1e-6
    h_ref, normed_ref, cos_ref = ops.add_rmsnorm_cossim(h.clone(), delta, weight, eps, with_delta)

    h_dev = h.to(DEV)
    delta_dev = delta.to(DEV) if delta is not None else None
    weight_dev = weight.to(DEV)
    poison_allocator()
    h_out, normed, cos = ops.add_rmsnorm_cossim(h_dev, delta_dev, weight_dev, eps, with_delta)
    torch.cuda.synchronize()

    assert h_out.data_ptr() == h_dev.data_ptr(), "the residual stream must be updated in place"
    # The residual add is the same single rounding on both sides: bit-exact.
    assert torch.equal(h_out.cpu(), h_ref)
    assert normed.dtype == dtype and normed.is_cuda
    assert rel_err(normed, normed_ref) <= NORM_TOL[dtype]
    if with_delta:
        assert cos.dtype == torch.float32 and cos.shape == (rows,)
        assert torch.isfinite(cos).all()
        assert (cos.cpu() - cos_ref).abs().max().item() <= 5e-5
    else:
        assert cos is None


def test_add_rmsnorm_cossim_zero_rows_cos_is_one():
    # cos(0, 0 + 0) is defined as 1 (no change), on both devices.
    h = torch.zeros(3, 256, device=DEV)
    _, normed, cos = ops.add_rmsnorm_cossim(h, torch.zeros_like(h), torch.ones(256, device=DEV), 1e-6, True)
    assert torch.equal(cos.cpu(), torch.ones(3))
    assert torch.equal(normed.cpu(), torch.zeros(3, 256))


def test_add_rmsnorm_cossim_refuses_fp64_and_mixed_devices():
    h = torch.randn(2, 64, device=DEV, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        ops.add_rmsnorm_cossim(h, None, torch.ones(64, device=DEV, dtype=torch.float64), 1e-6, False)
    with pytest.raises(ValueError, match="weight"):
        ops.add_rmsnorm_cossim(torch.randn(2, 64, device=DEV), None, torch.ones(64), 1e-6, False)


# ---------------------------------------------------------------------------------------------
# rope_qkv_to_cache
# ---------------------------------------------------------------------------------------------
def rope_tables(positions: int, head_dim: int, dtype, theta: float = 10000.0):
    """As the model builds them: angles in float32, cos/sin cast to the model dtype."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = torch.arange(positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype).contiguous(), angles.sin().to(dtype).contiguous()


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2), (12, 2), (32, 8), (14, 2)])
@pytest.mark.parametrize("head_dim", [64, 128, 80])
@pytest.mark.parametrize("tokens,start", [(1, 0), (1, 37), (5, 0), (13, 100), (13, 243)])
def test_rope_qkv_to_cache(dtype, heads, kv_heads, head_dim, tokens, start):
    capacity = 256
    g = seeded("rope", dtype, heads, kv_heads, head_dim, tokens, start)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=g).to(dtype)
    cos, sin = rope_tables(capacity, head_dim, dtype)
    nan = torch.full((capacity, kv_heads, head_dim), float("nan"), dtype=dtype)
    k_ref, v_ref = nan.clone(), nan.clone()
    q_ref = ops.rope_qkv_to_cache(qkv, cos, sin, start, heads, kv_heads, k_ref, v_ref)

    # The device slabs are views into a [layers, capacity, KVH, D] buffer, as KVCache hands them out.
    k_buf = torch.full((2, capacity, kv_heads, head_dim), float("nan"), dtype=dtype, device=DEV)
    v_buf = k_buf.clone()
    qkv_dev, cos_dev, sin_dev = qkv.to(DEV), cos.to(DEV), sin.to(DEV)
    poison_allocator()
    q = ops.rope_qkv_to_cache(qkv_dev, cos_dev, sin_dev, start, heads, kv_heads, k_buf[1], v_buf[1])
    torch.cuda.synchronize()

    assert q.shape == (tokens, heads, head_dim)
    # Same operations and roundings as the CPU: bit-exact (NaN rows = rows that must stay untouched).
    assert torch.equal(q.cpu(), q_ref)
    torch.testing.assert_close(k_buf[1].cpu(), k_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(v_buf[1].cpu(), v_ref, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(k_buf[0]).all() and torch.isnan(v_buf[0]).all(), "wrote outside its layer slab"


def test_rope_refuses_fp64():
    cos, sin = rope_tables(8, 64, torch.float64)
    k = torch.zeros(8, 1, 64, dtype=torch.float64, device=DEV)
    with pytest.raises(TypeError, match="float64"):
        ops.rope_qkv_to_cache(torch.randn(1, 3 * 64, dtype=torch.float64, device=DEV), cos.to(DEV), sin.to(DEV),
                              0, 1, 1, k, k.clone())


# ---------------------------------------------------------------------------------------------
# attention_with_cache
# ---------------------------------------------------------------------------------------------
# Reference: the CPU reference op (ATen) on float32 copies of the same (rounded) inputs, so the thresholds measure
# the CUDA kernel's error (float32 softmax + one rounding of the output), not the CPU op's own
# low-precision roundings.
ATTN_TOL = {torch.float32: 2e-5, torch.bfloat16: 6e-3, torch.float16: 1.5e-3}


def attention_case(dtype, heads, kv_heads, head_dim, keys, tokens, q_scale=1.0, extra=5, seed_key=()):
    g = seeded("attn", dtype, heads, kv_heads, head_dim, keys, tokens, q_scale, *seed_key)
    start = keys - tokens
    capacity = keys + extra
    q = (torch.randn(tokens, heads, head_dim, generator=g) * q_scale).to(dtype)
    k = torch.randn(capacity, kv_heads, head_dim, generator=g).to(dtype)
    v = torch.randn(capacity, kv_heads, head_dim, generator=g).to(dtype)
    scale = 1.0 / math.sqrt(head_dim)
    ref = ops.attention_with_cache_reference(q.float(), k[:keys].float().contiguous(), v[:keys].float().contiguous(),
                                       start, scale)
    # Device caches: layer 1 of a [2, capacity, KVH, D] buffer; rows past start + T hold NaN, which
    # the kernel must never read.
    k_buf = torch.full((2, capacity, kv_heads, head_dim), float("nan"), dtype=dtype, device=DEV)
    v_buf = k_buf.clone()
    k_buf[1, :keys] = k[:keys].to(DEV)
    v_buf[1, :keys] = v[:keys].to(DEV)
    return q.to(DEV), k_buf[1], v_buf[1], start, scale, ref


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2), (12, 2), (32, 8)])
@pytest.mark.parametrize("head_dim", [64, 128, 96])
@pytest.mark.parametrize("keys", [1, 2, 33, 129, 256, 1000, 4096])
@pytest.mark.parametrize("tokens", [1, 3, 13])
def test_attention_with_cache(dtype, heads, kv_heads, head_dim, keys, tokens):
    if tokens > keys:
        pytest.skip("more new tokens than cache rows")
    q, k_cache, v_cache, start, scale, ref = attention_case(dtype, heads, kv_heads, head_dim, keys, tokens)
    poison_allocator()
    out = ops.attention_with_cache(q, k_cache, v_cache, start, scale)
    torch.cuda.synchronize()
    assert out.shape == (tokens, heads * head_dim) and out.dtype == dtype and out.is_cuda
    assert rel_err(out, ref) <= ATTN_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("keys,tokens", [(100, 1), (100, 13), (4096, 1), (4096, 13)])
def test_attention_peaked_scores(dtype, keys, tokens):
    # Scores with a standard deviation of 8: the online softmax must rescale without overflow.
    q, k_cache, v_cache, start, scale, ref = attention_case(dtype, 8, 2, 128, keys, tokens, q_scale=8.0)
    poison_allocator()
    out = ops.attention_with_cache(q, k_cache, v_cache, start, scale)
    assert rel_err(out, ref) <= ATTN_TOL[dtype]


@pytest.mark.parametrize("keys,tokens", [(300, 300), (700, 520), (64, 64)])
def test_attention_prefill_shapes(keys, tokens):
    # Prompt-sized T (many query tiles, causal cut per tile), fp32 and bf16.
    for dtype in (torch.float32, torch.bfloat16):
        q, k_cache, v_cache, start, scale, ref = attention_case(dtype, 12, 2, 128, keys, tokens)
        poison_allocator()
        out = ops.attention_with_cache(q, k_cache, v_cache, start, scale)
        assert rel_err(out, ref) <= ATTN_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_attention_nonfinite_later_row_does_not_reach_earlier_rows(dtype):
    # A verify pass over [last, d1..dk] where d_k's value row is NaN (a draft the model cannot process):
    # rows before it must be what plain decoding computes, finite.
    q, k_cache, v_cache, start, scale, ref = attention_case(dtype, 8, 2, 64, 40, 4)
    v_cache[39] = float("nan")
    out = ops.attention_with_cache(q, k_cache, v_cache, start, scale)
    assert rel_err(out[:3], ref[:3]) <= ATTN_TOL[dtype]
    assert torch.isnan(out[3].float()).all()


def test_attention_noncontiguous_query_and_small_head_dim():
    for head_dim in (16, 32, 2):
        q, k_cache, v_cache, start, scale, ref = attention_case(torch.float32, 4, 2, head_dim, 50, 4)
        q_nc = q.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
        assert not q_nc.is_contiguous()
        out = ops.attention_with_cache(q_nc, k_cache, v_cache, start, scale)
        assert rel_err(out, ref) <= ATTN_TOL[torch.float32]


def test_attention_refuses_fp64_and_large_head_dim():
    q = torch.randn(1, 2, 64, dtype=torch.float64, device=DEV)
    k = torch.randn(4, 2, 64, dtype=torch.float64, device=DEV)
    with pytest.raises(TypeError, match="float64"):
        ops.attention_with_cache(q, k, k.clone(), 3, 0.125)
    q = torch.randn(1, 2, 256, device=DEV)
    k = torch.randn(4, 2, 256, device=DEV)
    with pytest.raises(ValueError, match="head_dim"):
        ops.attention_with_cache(q, k, k.clone(), 3, 0.0625)


# ---------------------------------------------------------------------------------------------
# argmax_top1
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("rows", [1, 4, 13])
@pytest.mark.parametrize("vocab", [1, 7, 1000, 32000, 32001, 151936])
@pytest.mark.parametrize("with_prob", [True, False], ids=["prob", "noprob"])
def test_argmax_top1(dtype, rows, vocab, with_prob):
    g = seeded("argmax", dtype, rows, vocab, with_prob)
    logits = (torch.randn(rows, vocab, generator=g) * 3).to(dtype)
    if vocab >= 7:
        # Row 0: an exact tie of the maximum at two places; the first index must win.
        top = logits[0].float().max() + 1
        logits[0, vocab // 3] = top
        logits[0, vocab - 2] = top
    if rows >= 4 and vocab >= 7:
        logits[1, vocab // 2] = float("nan")
        logits[2, 3] = float("inf")
        logits[3, :] = float("-inf")          # nothing left: -1
    if rows >= 13 and vocab >= 7:
        logits[4, ::2] = float("-inf")        # removed tokens (an LM-head screen's): the rest decides
        logits[5, 1:] = float("-inf")
    ids_ref, probs_ref = ops.argmax_top1(logits, with_prob)

    logits_dev = logits.to(DEV)
    poison_allocator()
    ids, probs = ops.argmax_top1(logits_dev, with_prob)
    torch.cuda.synchronize()
    assert ids.dtype == torch.int64 and probs.dtype == torch.float32 and ids.is_cuda
    assert torch.equal(ids.cpu(), ids_ref)
    if vocab >= 7:
        assert ids_ref[0].item() == vocab // 3
    if rows >= 4 and vocab >= 7:
        assert ids_ref[1:4].tolist() == [-1, -1, -1]
    if rows >= 13 and vocab >= 7:
        assert ids_ref[4].item() == logits[4].float().argmax().item() and ids_ref[5].item() == 0
    torch.testing.assert_close(probs.cpu(), probs_ref, rtol=2e-4, atol=1e-7)
    if not with_prob:
        assert torch.equal(probs.cpu(), torch.zeros(rows))


def test_argmax_top1_all_equal_and_noncontiguous():
    logits = torch.zeros(3, 1000, device=DEV)
    ids, probs = ops.argmax_top1(logits, True)
    assert ids.tolist() == [0, 0, 0]
    torch.testing.assert_close(probs.cpu(), torch.full((3,), 1e-3))
    wide = torch.randn(1000, 5, device=DEV)
    ids, _ = ops.argmax_top1(wide.t(), False)  # non-contiguous input is made contiguous by the op
    assert torch.equal(ids.cpu(), wide.t().cpu().argmax(1))


def test_argmax_top1_refuses_fp64():
    with pytest.raises(TypeError, match="float64"):
        ops.argmax_top1(torch.randn(1, 10, dtype=torch.float64, device=DEV), True)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("vocab", [1, 7, 32001, 151936])
def test_top1_margin_matches_cpu(dtype, vocab):
    # On CUDA the margin comes from ATen's topk; it must agree with the CPU op, ties and bad rows included.
    g = seeded("margin", dtype, vocab)
    logits = (torch.randn(4, vocab, generator=g) * 3).to(dtype)
    if vocab >= 7:
        top = logits[0].float().max() + 1
        logits[0, 2] = logits[0, vocab - 1] = top  # a tie: margin 0
        logits[1, 3] = float("nan")                 # id -1: margin 0
    ids_ref, _ = ops.argmax_top1(logits, False)
    ref = ops.top1_margin(logits, ids_ref)
    ids, _ = ops.argmax_top1(logits.to(DEV), False)
    got = ops.top1_margin(logits.to(DEV), ids)
    assert got.is_cuda and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# greedy_accept (bound once the decoder wires it: ops.greedy_accept(drafts, target))
# ---------------------------------------------------------------------------------------------
ACCEPT_CASES = [
    ([], [5], (0, 5)),
    ([1, 2, 3], [1, 2, 3, 4], (3, 4)),
    ([1, 2, 3], [9, 2, 3, 4], (0, 9)),
    ([1, 2, 3], [1, 2, 7, 4], (2, 7)),
    ([1, 2, 3], [1, 2, 3, -1], (3, -1)),
    ([1, 2, 3], [1, -1, 3, 4], (1, -1)),  # a non-finite row at the acceptance point is an error...
    ([1, 2, 3], [1, 5, -1, -1], (1, 5)),  # ...past it (rows after a rejected draft) it is never used
    (list(range(40)), list(range(40)) + [99], (40, 99)),
    (list(range(40)), list(range(35)) + [0] * 6, (35, 0)),
]


@pytest.mark.skipif(not hasattr(ops, "greedy_accept"), reason="greedy_accept is not bound in dotf._C.testing.ops yet")
@pytest.mark.parametrize("drafts,target,expected", ACCEPT_CASES)
def test_greedy_accept(drafts, target, expected):
    d = torch.tensor(drafts, dtype=torch.int64)
    t = torch.tensor(target, dtype=torch.int64)
    assert tuple(ops.greedy_accept(d, t).tolist()) == expected
    poison_allocator()
    out = ops.greedy_accept(d.to(DEV), t.to(DEV))
    assert out.is_cuda and out.dtype == torch.int64 and out.shape == (2,)
    assert tuple(out.cpu().tolist()) == expected


@pytest.mark.skipif(not hasattr(ops, "greedy_accept"), reason="greedy_accept is not bound in dotf._C.testing.ops yet")
def test_greedy_accept_random_against_cpu():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        k = int(torch.randint(0, 70, (1,), generator=g))
        target = torch.randint(0, 4, (k + 1,), generator=g)
        drafts = target[:k].clone()
        if k and torch.rand(1, generator=g).item() < 0.7:
            i = int(torch.randint(0, k, (1,), generator=g))
            drafts[i] = 9
        ref = ops.greedy_accept(drafts, target)
        out = ops.greedy_accept(drafts.to(DEV), target.to(DEV))
        assert torch.equal(out.cpu(), ref)
