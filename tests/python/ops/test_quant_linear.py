"""Weight-only quantized linears (ops/quant_linear.h): the int8 (per output channel) and int4 (groups
along K) schemes and the float64 reference against an independent torch computation (CPU, runs in
CI), and the CUDA kernels against the reference over the draft's shapes, M = 1..16, dtypes and
group sizes (skipped without a CUDA device and a CUDA build of dotf)."""
from __future__ import annotations

import functools

import pytest
import torch

from dotf import _C

ops = _C.testing.ops

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DT_IDS = ["fp32", "bf16", "fp16"]


# ---- the schemes, written out independently of the C++ (as bench/quant_draft_acceptance.py does) ----
def int8_scheme(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [N, K] int8, scale [N] float32): symmetric per output channel."""
    wf = w.float()
    s = (wf.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).eps)
    return (wf / s[:, None]).round().clamp(-127, 127).to(torch.int8), s


def int4_scheme(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [N, Kp] int8 in [-7, 7], scale [N, Kp / group] float16): symmetric per group of K."""
    n, k = w.shape
    g = torch.nn.functional.pad(w.float(), (0, (-k) % group)).view(n, -1, group)
    s = (g.abs().amax(2, keepdim=True) / 7).half().float().clamp_min(torch.finfo(torch.float16).tiny)
    q = (g / s).round().clamp(-7, 7)
    return q.view(n, -1).to(torch.int8), s.squeeze(2).half()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """[N, Kp/2] uint8 (even k in the low nibble, q + 8) -> [N, Kp] int8 q."""
    lo, hi = (packed & 15).to(torch.int8), (packed >> 4).to(torch.int8)
    return torch.stack([lo, hi], 2).view(packed.shape[0], -1) - 8


def dequantized(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """The float64 [N, K] weight the scheme multiplies by."""
    k = w.shape[1]
    if bits == 8:
        q, s = int8_scheme(w)
        return q.double() * s.double()[:, None]
    q, s = int4_scheme(w, group)
    return (q.double().view(q.shape[0], -1, group) * s.double()[:, :, None]).view(q.shape[0], -1)[:, :k]


def random_weight(n: int, k: int, dtype, device="cpu", seed=0) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(n, k, generator=gen, device=device) * 0.02
    w[0, : min(k, 40)] = 0  # a zero run: all-zero int4 groups when K is small
    return w.to(dtype)


# ---- CPU: the schemes and the reference (CI) ----------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("k", [64, 50, 136])
def test_int8_scheme(dtype, k):
    w = random_weight(24, k, dtype)
    qw = ops.quantize_weight(w, 8)
    q, s = int8_scheme(w)
    kp = -(-k // 16) * 16
    assert qw.qweight.dtype == torch.int8 and tuple(qw.qweight.shape) == (24, kp)
    assert torch.equal(qw.qweight[:, :k], q) and not qw.qweight[:, k:].any()
    assert torch.equal(qw.scale, s)
    assert (qw.bits, qw.group, qw.in_features, qw.out_features) == (8, 0, k, 24)
    assert qw.nbytes == 24 * kp + 24 * 4
    assert torch.equal(ops.dequantize_weight(qw), q.double() * s.double()[:, None])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("k,group", [(256, 128), (300, 128), (96, 32), (576, 64)])
def test_int4_scheme(dtype, k, group):
    w = random_weight(10, k, dtype)
    w[3, 5] = 1.0  # an outlier: its group's other weights round to small q
    qw = ops.quantize_weight(w, 4, group)
    q, s = int4_scheme(w, group)
    kp = -(-k // group) * group
    assert qw.qweight.dtype == torch.uint8 and tuple(qw.qweight.shape) == (10, kp // 2)
    assert torch.equal(unpack_int4(qw.qweight), q)
    assert q.abs().max() <= 7 and (q[:, k:] == 0).all()
    assert qw.scale.dtype == torch.float16 and torch.equal(qw.scale, s)
    assert (s.float() > 0).all(), "an all-zero group must keep a positive scale"
    assert torch.equal(ops.dequantize_weight(qw), dequantized(w, 4, group))


def test_int4_error_is_bounded():
    """|w - dequantized| <= half a step of the group's scale (the fp16 scale rounding included)."""
    w = random_weight(16, 512, torch.float32)
    qw = ops.quantize_weight(w, 4, 128)
    step = qw.scale.double().repeat_interleave(128, 1)
    assert ((w.double() - ops.dequantize_weight(qw)).abs() <= step * 0.5 * (1 + 2**-10) + 1e-12).all()


@pytest.mark.parametrize("bits,group", [(8, 0), (4, 128), (4, 64)], ids=["int8", "int4-g128", "int4-g64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("m", [1, 5, 16, 17])
@pytest.mark.parametrize("with_bias", [False, True], ids=["", "bias"])
def test_reference_is_the_float64_product(bits, group, dtype, m, with_bias):
    n, k = 40, 320
    w = random_weight(n, k, dtype)
    x = torch.randn(m, k).to(dtype)
    bias = torch.randn(n).to(dtype) if with_bias else None
    qw = ops.quantize_weight(w, bits, group or 128)
    expect = x.double() @ dequantized(w, bits, group or 128).T
    if bias is not None:
        expect += bias.double()
    ref = ops.quant_linear_reference(x, qw, bias)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(ref, expect, rtol=1e-12, atol=1e-12)
    # On the CPU quant_linear is the reference rounded to x's dtype.
    assert torch.equal(ops.quant_linear(x, qw, bias), ref.to(dtype))


def test_bad_arguments_are_refused():
    w = random_weight(8, 64, torch.float32)
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        ops.quantize_weight(w, 3)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.quantize_weight(w, 4, 48)
    with pytest.raises(ValueError, match="in_features"):
        ops.quant_linear(torch.randn(2, 32), ops.quantize_weight(w, 8))
    with pytest.raises(ValueError, match="bias"):
        ops.quant_linear(torch.randn(2, 64), ops.quantize_weight(w, 4), torch.randn(7))


# ---- CUDA: the kernels vs the reference -------------------------------------------------------
def cuda_only(test):
    for mark in (pytest.mark.cuda,
                 pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
                 pytest.mark.skipif(not _C.build_info()["cuda"], reason="dotf was built without CUDA kernels")):
        test = mark(test)
    return test

# Llama-2-7B's linears (q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008, LM head 32000x4096),
# SmolLM2's odd K (576: a partial int4 group), a small odd N with a long K (split K, the tail block)
# and a tiny one.
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096), (1536, 576), (7, 8192), (5, 136)]
SHAPE_IDS = [f"{n}x{k}" for n, k in SHAPES]
LARGE = {(11008, 4096), (4096, 11008), (32000, 4096)}


@functools.lru_cache(maxsize=4)
def cuda_weight(n: int, k: int, dtype, bits: int, group: int):
    w = random_weight(n, k, dtype, device="cuda", seed=n + k)
    return w, ops.quantize_weight(w, bits, group)


def check_kernel(x: torch.Tensor, qw, bias=None) -> torch.Tensor:
    """quant_linear on CUDA vs the float64 reference, per element: the output's rounding plus float32
    sums (a bound scaled by sum |x| |w|, loose next to K float32 roundings; a wrong index is O(1))."""
    torch.full((x.shape[0] * qw.out_features + 64,), float("nan"), dtype=x.dtype, device="cuda")  # poison
    out = ops.quant_linear(x, qw, bias)
    ref = ops.quant_linear_reference(x, qw, bias)
    assert out.dtype == x.dtype and out.shape == ref.shape
    assert torch.isfinite(out).all(), "an output element was left unwritten"
    mag = x.double().abs() @ ops.dequantize_weight(qw).abs().T
    if bias is not None:
        mag += bias.double().abs()
    eps_out = {torch.float32: 2**-24, torch.bfloat16: 2**-8, torch.float16: 2**-11}[x.dtype]
    bound = ref.abs() * eps_out + mag * 1e-4 + 1e-30
    err = (out.double() - ref).abs()
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"error {worst:.2f}x the bound (max abs error {err.max().item():.3g})"
    return out


@cuda_only
@pytest.mark.parametrize("bits", [8, 4], ids=["int8", "int4"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("m", list(range(1, 17)))
def test_cuda_kernel_matches_reference(bits, dtype, shape, m):
    if shape in LARGE and m not in (1, 2, 5, 9, 16):
        pytest.skip("large shapes at M in {1, 2, 5, 9, 16} only (the kernel widths and their tails)")
    n, k = shape
    _, qw = cuda_weight(n, k, dtype, bits, 128)
    x = torch.randn(m, k, device="cuda").to(dtype)
    check_kernel(x, qw)


@cuda_only
@pytest.mark.parametrize("bits,group", [(8, 128), (4, 128), (4, 64), (4, 256)], ids=["int8", "g128", "g64", "g256"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cuda_groups_bias_and_passes(bits, group, dtype):
    """Group sizes, a bias (Qwen's qkv), M > 16 (several passes over the weights), split K."""
    for n, k in [(896, 1024), (7, 8192)]:
        w = random_weight(n, k, dtype, device="cuda", seed=3)
        qw = ops.quantize_weight(w, bits, group)
        bias = torch.randn(n, device="cuda").to(dtype)
        for m in (1, 16, 17, 40):
            check_kernel(torch.randn(m, k, device="cuda").to(dtype), qw, bias)


@cuda_only
@pytest.mark.parametrize("bits", [8, 4], ids=["int8", "int4"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cuda_quantize_matches_cpu_and_is_deterministic(bits, dtype):
    w = random_weight(300, 8200, dtype, device="cuda", seed=7)
    on_gpu, on_cpu = ops.quantize_weight(w, bits), ops.quantize_weight(w.cpu(), bits)
    assert torch.equal(on_gpu.qweight.cpu(), on_cpu.qweight) and torch.equal(on_gpu.scale.cpu(), on_cpu.scale)
    x = torch.randn(3, 8200, device="cuda").to(dtype)
    # Bit-identical results call after call (fixed reduction order, no atomics), also when K is split.
    for n in (300, 3):
        qw = ops.quantize_weight(w[:n].contiguous(), bits)
        assert torch.equal(ops.quant_linear(x, qw), ops.quant_linear(x, qw))
    with pytest.raises(ValueError, match="16-byte aligned"):
        ops.quant_linear(torch.randn(2, 8198, device="cuda").to(dtype),
                         ops.quantize_weight(w[:, :8198].contiguous(), bits))
