"""The sampling op's CUDA kernels (csrc/ops/cuda/sample_warp.cu, csrc/ops/cuda/sample.cu) against its CPU
reference (csrc/ops/sample.cpp): the warped probabilities over a grid of vocabularies and warpers, the
inverse-CDF draw and the speculative acceptance test with the same uniforms, and the error cases (bad rows,
float64). Skipped without a CUDA device or a CUDA build of dotf.

The two sides round differently (exp differs by an ulp or two; sums run in another order), so a token whose
fate sits on a knife edge may differ: one whose mass before it is within 1e-6 of the top-p target, whose
weight is within 1e-6 of min_p, or whose weight underflows. Tokens are compared everywhere else, and draws
use uniforms away from every CDF boundary.
"""
from __future__ import annotations

import itertools
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

DEV = "cuda"
F64 = torch.float64
VOCABS = [7, 1000, 49152, 151936]
WARPS = [  # (temperature, top_k, top_p, min_p): every top_k x top_p x min_p, temperatures in turn
    (t, k, p, m)
    for i, (k, p, m) in enumerate(itertools.product([0, 1, 5, 50], [0.3, 0.9, 1.0], [0.0, 0.05]))
    for t in ([0.3, 1.0, 2.0] if i % 4 == 0 else [[0.3, 1.0, 2.0][i % 3]])
]


def seeded(*key) -> torch.Generator:
    """A generator seeded from the case's parameters: fresh inputs per case, reproducible per run."""
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def knife_edge(row: torch.Tensor, temperature, top_k, top_p, min_p) -> torch.Tensor:
    """[V] bool: tokens whose survival rounding may decide (see the module docstring), in float64."""
    x = row.to(F64)
    finite = x > -float("inf")
    keep = finite.clone()
    if 0 < top_k < int(finite.sum()):
        keep &= x >= x.topk(top_k).values[-1]
    e = torch.where(keep, torch.exp((x - x.max()) / temperature), torch.zeros_like(x))
    edge = keep & (e < 1.01 * torch.exp(torch.tensor(-87.3, dtype=F64)))
    if top_p < 1.0:
        order = torch.sort(e, descending=True, stable=True).indices  # ties by token id
        before = torch.cumsum(e[order], 0) - e[order]
        z = e.sum()
        edge[order] |= (before - top_p * z).abs() <= 1e-6 * z
    if min_p > 0.0:
        edge |= keep & ((e - min_p).abs() <= 1e-6)
    return edge


def assert_rows_match(got: torch.Tensor, want: torch.Tensor, logits: torch.Tensor, warp) -> None:
    """Same surviving tokens (knife edges aside) and probabilities within 1e-5 relative."""
    got, want = got.cpu().to(F64), want.to(F64)
    assert torch.isfinite(got).all(), "NaN in a valid row (an element left unwritten?)"
    for r in range(got.shape[0]):
        differ = (got[r] > 0) != (want[r] > 0)
        if differ.any():
            edge = knife_edge(logits[r], *warp)
            assert edge[differ].all(), (
                f"row {r}: tokens {differ.nonzero().flatten().tolist()[:10]} survive on one side only")
            both = (got[r] > 0) & (want[r] > 0)  # compare the common tokens, renormalized
            g, w = got[r] * both, want[r] * both
            torch.testing.assert_close(g / g.sum(), w / w.sum(), rtol=1e-5, atol=1e-30)
        else:
            torch.testing.assert_close(got[r], want[r], rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("warp", WARPS, ids=lambda w: "t{}-k{}-p{}-m{}".format(*w))
@pytest.mark.parametrize("vocab", VOCABS)
def test_warped_probabilities_match_cpu(vocab, warp):
    g = seeded("warp", vocab, warp)
    logits = torch.randn(4, vocab, generator=g) * 3
    logits[1, torch.randperm(vocab, generator=g)[: vocab // 3]] = -float("inf")  # removed tokens
    logits[2] = (logits[2] * 4).round() / 4  # many ties, also at the top-k and top-p cuts
    got = ops.warped_probabilities(logits.to(DEV), *warp)
    assert got.is_cuda and got.dtype == torch.float32 and got.shape == logits.shape
    want = ops.warped_probabilities(logits, *warp)
    assert_rows_match(got, want, logits, warp)
    torch.testing.assert_close(got.sum(1).cpu(), torch.ones(4), rtol=1e-5, atol=0)
    # Deterministic: the same call gives the same bits.
    assert torch.equal(ops.warped_probabilities(logits.to(DEV), *warp), got)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_are_warped_in_float32(dtype):
    logits = (torch.randn(3, 4096, generator=seeded("half", dtype)) * 3).to(dtype)
    warp = (0.7, 40, 0.9, 0.02)
    got = ops.warped_probabilities(logits.to(DEV), *warp)
    assert got.dtype == torch.float32
    assert_rows_match(got, ops.warped_probabilities(logits, *warp), logits.float(), warp)


def test_top_k_one_keeps_the_first_maximum_and_ties_at_the_kth_value():
    logits = torch.tensor([[0.0, 3.0, 1.0, 3.0, 2.0], [1.0, 2.0, 2.0, 2.0, 0.0]])
    got = ops.warped_probabilities(logits.to(DEV), 1.0, 1, 1.0, 0.0).cpu()
    want = ops.warped_probabilities(logits, 1.0, 1, 1.0, 0.0)
    assert torch.equal(got > 0, want > 0)  # ties at the k-th value stay: tokens 1 and 3; 1, 2 and 3
    torch.testing.assert_close(got, want)


def interval_midpoints(w: torch.Tensor, g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n uniforms inside the CDF intervals (in vocabulary order) of tokens of weight row w, each at least
    1e-6 of the total from a boundary, and the tokens they select."""
    w = w.to(F64).clamp_min(0)
    c = torch.cumsum(w, 0) / w.sum()
    lo = torch.cat([torch.zeros(1, dtype=F64), c[:-1]])
    wide = ((c - lo) > 4e-6).nonzero().flatten()
    tokens = wide[torch.randint(len(wide), (n,), generator=g)]
    frac = 1e-6 / (c[tokens] - lo[tokens])
    t = torch.rand(n, generator=g, dtype=F64) * (1 - 2 * frac) + frac
    return lo[tokens] + t * (c[tokens] - lo[tokens]), tokens


@pytest.mark.parametrize("vocab", VOCABS)
def test_sample_rows_matches_cpu(vocab):
    g = seeded("sample", vocab)
    logits = torch.randn(6, vocab, generator=g) * 2
    probs = ops.warped_probabilities(logits, 1.0, 0, 0.95, 0.0)  # zeros included
    probs[5] *= 3.0  # unnormalized weights are fine
    for _ in range(4):
        u, want = zip(*(interval_midpoints(probs[r], g, 1) for r in range(6)))
        u, want = torch.cat(u), torch.cat(want)
        cpu = ops.sample_rows(probs, u)
        gpu = ops.sample_rows(probs.to(DEV), u.to(DEV))
        assert gpu.is_cuda and gpu.dtype == torch.int64
        assert cpu.tolist() == want.tolist()
        assert gpu.cpu().tolist() == want.tolist()


def test_sample_rows_edges():
    p = torch.tensor([[0.1, 0.0, 0.2, 0.7], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    u = torch.tensor([0.0, 0.999999, 0.5, 0.0], dtype=F64)
    want = [0, 1, -1, 3]  # u = 0: the first positive weight; an all-zero row: -1
    assert ops.sample_rows(p, u).tolist() == want
    assert ops.sample_rows(p.to(DEV), u.to(DEV)).cpu().tolist() == want
    # A long row whose only weight sits at the end, past every warp's segment but the last.
    q = torch.zeros(2, 151936)
    q[0, -1] = 1.0
    q[1, 0] = q[1, -1] = 1.0
    u = torch.tensor([0.3, 0.7], dtype=F64)
    assert ops.sample_rows(q.to(DEV), u.to(DEV)).cpu().tolist() == [151935, 151935]


def residual_row(p: torch.Tensor, q: torch.Tensor, x: int, lookup: bool) -> torch.Tensor:
    """The distribution the replacement is drawn from at a rejection (float64), as the CPU builds it."""
    qq = torch.zeros_like(p, dtype=F64) if lookup else q.to(F64)
    if lookup:
        qq[x] = 1.0
    r = (p.to(F64) - qq).clamp_min(0)
    return r if r.sum() > 0 else p.to(F64)


def accept_case(g, k: int, vocab: int, lookup_every: int):
    """p: [k+1, V] target rows; q: [k, V] draft rows close to p (so that drafts are kept and rejected);
    every lookup_every-th draft a lookup (drawn from p), the others drawn from q."""
    logits = torch.randn(k + 1, vocab, generator=g) * 4
    p = ops.warped_probabilities(logits, 1.0, 0, 0.95, 0.0)
    q = ops.warped_probabilities(logits[:k] * 1.1 + 0.5 * torch.randn(k, vocab, generator=g), 1.0, 50, 1.0, 0.0)
    lookup = torch.tensor([lookup_every > 0 and i % lookup_every == lookup_every - 1 for i in range(k)],
                          dtype=torch.bool)
    drafts = torch.stack([torch.multinomial(p[i] if lookup[i] else q[i], 1, generator=g)[0] for i in range(k)]) \
        if k else torch.zeros(0, dtype=torch.int64)
    return p, q, drafts, lookup


def uniforms_for(p, q, drafts, lookup, g) -> torch.Tensor:
    """Uniforms away from every decision boundary: each u_i at least 1e-6 from p(x)/q(x), and the last one
    inside a wide CDF interval of the distribution the op ends up drawing from."""
    k = drafts.numel()
    u = torch.rand(k + 1, generator=g, dtype=F64)
    for i in range(k):
        x = int(drafts[i])
        ratio = float(p[i, x]) / (1.0 if lookup[i] else float(q[i, x]))
        while abs(float(u[i]) - ratio) < 1e-6:
            u[i] = torch.rand(1, generator=g, dtype=F64)
    accepted = int(ops.speculative_accept(p, q, drafts, lookup, u)[0][0])
    row = p[k].to(F64) if accepted == k else residual_row(p[accepted], q[accepted], int(drafts[accepted]),
                                                          bool(lookup[accepted]))
    u[k] = interval_midpoints(row, g, 1)[0][0]
    return u


@pytest.mark.parametrize("vocab", [7, 1000, 151936])
@pytest.mark.parametrize("k,lookup_every", [(0, 0), (1, 0), (4, 0), (4, 2), (8, 1)])
def test_speculative_accept_matches_cpu(vocab, k, lookup_every):
    g = seeded("accept", vocab, k, lookup_every)
    for _ in range(8):
        p, q, drafts, lookup = accept_case(g, k, vocab, lookup_every)
        u = uniforms_for(p, q, drafts, lookup, g)
        want, want_ratios = ops.speculative_accept(p, q, drafts, lookup, u)
        got, ratios = ops.speculative_accept(*(t.to(DEV) for t in (p, q, drafts, lookup, u)))
        assert got.is_cuda and ratios.is_cuda and got.dtype == torch.int64 and ratios.dtype == F64
        assert got.cpu().tolist() == want.tolist()
        torch.testing.assert_close(ratios.cpu(), want_ratios, rtol=1e-12, atol=0, equal_nan=True)


def test_speculative_accept_rejection_without_residual_draws_from_p():
    # q = 2p: draft 0 is kept with probability 1/2 and max(0, p - q) is 0 everywhere: the replacement
    # comes from p itself, as on the CPU.
    p = ops.warped_probabilities(torch.randn(2, 1000, generator=seeded("noresid")), 1.0, 0, 1.0, 0.0)
    q = 2 * p[:1]
    drafts = torch.tensor([int(p[0].argmax())])
    lookup = torch.zeros(1, dtype=torch.bool)
    g = seeded("noresid-u")
    for _ in range(5):
        u = torch.tensor([0.75, float(interval_midpoints(p[0], g, 1)[0][0])], dtype=F64)
        want, want_ratios = ops.speculative_accept(p, q, drafts, lookup, u)
        got, ratios = ops.speculative_accept(*(t.to(DEV) for t in (p, q, drafts, lookup, u)))
        assert int(want[0]) == 0 and got.cpu().tolist() == want.tolist()
        torch.testing.assert_close(ratios.cpu(), want_ratios)


def test_p_equal_q_keeps_every_draft():
    p = ops.warped_probabilities(torch.randn(4, 5000, generator=seeded("p=q")), 0.8, 0, 1.0, 0.0)
    drafts = p[:3].argmax(1)
    u = torch.tensor([0.999, 0.999, 0.999, 0.5], dtype=F64)
    got, ratios = ops.speculative_accept(p.to(DEV), p[:3].to(DEV), drafts.to(DEV),
                                         torch.zeros(3, dtype=torch.bool, device=DEV), u.to(DEV))
    assert got[0].item() == 3 and ratios.cpu().tolist() == [1.0, 1.0, 1.0]


def test_bad_rows_come_back_as_nan_and_draw_no_token():
    """The CPU raises for a row with NaN, +inf or no finite logit; CUDA does not read back: the row is NaN,
    and a draw from it gives -1 (the sampler raises "non-finite logits" from there)."""
    logits = torch.randn(5, 300, generator=seeded("bad"))
    logits[1, 17] = float("nan")
    logits[2, 3] = float("inf")
    logits[3] = -float("inf")
    for warp in [(1.0, 0, 1.0, 0.0), (0.7, 20, 0.9, 0.05)]:
        got = ops.warped_probabilities(logits.to(DEV), *warp).cpu()
        for r in (1, 2, 3):
            assert torch.isnan(got[r]).all()
            with pytest.raises(RuntimeError, match="non-finite logits .* at row 1"):
                ops.warped_probabilities(logits[[0, r]], *warp)
        good = [0, 4]
        assert_rows_match(got[good], ops.warped_probabilities(logits[good], *warp), logits[good], warp)
        u = torch.full((5,), 0.5, dtype=F64, device=DEV)
        ids = ops.sample_rows(got.to(DEV), u).cpu()
        assert ids[[1, 2, 3]].tolist() == [-1, -1, -1] and (ids[good] >= 0).all()
        # A kept draft before a bad bonus row: next is -1. A bad row at a draft rejects it (its ratio is NaN),
        # and the replacement drawn from it is -1.
        probs = got.to(DEV)
        drafts = got[0].argmax().reshape(1).to(DEV)
        lookup = torch.ones(1, dtype=torch.bool, device=DEV)
        u = torch.tensor([0.0, 0.5], dtype=F64, device=DEV)
        verdict, _ = ops.speculative_accept(probs[[0, 1]], probs[[0]], drafts, lookup, u)
        assert verdict.cpu().tolist() == [1, -1]
        verdict, ratios = ops.speculative_accept(probs[[1, 0]], probs[[0]], drafts, lookup, u)
        assert verdict.cpu().tolist() == [0, -1] and torch.isnan(ratios.cpu()).all()


def test_draft_outside_the_vocabulary_gives_no_token():
    p = torch.full((2, 5), 0.2, device=DEV)
    got, ratios = ops.speculative_accept(p, p[:1], torch.tensor([9], device=DEV),
                                         torch.zeros(1, dtype=torch.bool, device=DEV),
                                         torch.zeros(2, dtype=F64, device=DEV))
    assert got.cpu().tolist() == [0, -1] and torch.isnan(ratios.cpu()).all()


def test_float64_and_mixed_devices_are_refused():
    logits = torch.randn(2, 10, dtype=F64, device=DEV)
    with pytest.raises(TypeError, match="float64 is not supported on CUDA"):
        ops.warped_probabilities(logits)
    u = torch.rand(2, dtype=F64, device=DEV)
    with pytest.raises(TypeError, match="float64 is not supported on CUDA"):
        ops.sample_rows(logits.softmax(1), u)
    with pytest.raises(TypeError, match="float64 is not supported on CUDA"):
        ops.speculative_accept(logits.softmax(1), logits[:1].softmax(1), torch.tensor([1], device=DEV),
                               torch.zeros(1, dtype=torch.bool, device=DEV), u)
    with pytest.raises(ValueError, match="uniforms must be on cuda"):
        ops.sample_rows(logits.float().softmax(1), u.cpu())
    with pytest.raises(ValueError, match="drafts must be on cuda"):
        ops.speculative_accept(logits.float().softmax(1), logits[:1].float().softmax(1), torch.tensor([1]),
                               torch.zeros(1, dtype=torch.bool, device=DEV), u)
