"""The sampling op (csrc/ops/sample.*): transformers' warpers, the inverse-CDF draw, and the speculative
sampling acceptance test, whose output distribution must equal the target's exactly."""
from __future__ import annotations

import pytest
import torch

from dotf import _C

ops = _C.testing.ops
lp = pytest.importorskip("transformers.generation.logits_process")

WARPS = [  # (temperature, top_k, top_p, min_p)
    (1.0, 0, 1.0, 0.0), (0.7, 0, 1.0, 0.0), (1.3, 50, 1.0, 0.0), (1.0, 5, 1.0, 0.0), (0.7, 0, 0.9, 0.0),
    (1.0, 20, 0.8, 0.0), (1.0, 0, 1.0, 0.05), (0.6, 40, 0.95, 0.1), (2.0, 0, 0.3, 0.0), (1.0, 1, 1.0, 0.0),
]


def reference_probs(logits: torch.Tensor, temperature, top_k, top_p, min_p) -> torch.Tensor:
    """transformers' warpers in its order (temperature, top-k, top-p, min-p), then softmax, in float64."""
    scores = logits.to(torch.float64)
    warpers = [lp.TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(lp.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(lp.TopPLogitsWarper(top_p))
    if min_p > 0.0:
        warpers.append(lp.MinPLogitsWarper(min_p))
    for w in warpers:
        scores = w(None, scores)
    return scores.softmax(-1)


@pytest.mark.parametrize("warp", WARPS)
@pytest.mark.parametrize("dtype,vocab", [(torch.float64, 97), (torch.float32, 1000), (torch.float32, 49152),
                                         (torch.bfloat16, 256)])
def test_warped_probabilities_match_transformers(warp, dtype, vocab):
    g = torch.Generator().manual_seed(vocab)
    if dtype == torch.bfloat16:  # distinct values (k / 32 for k < 256 is exact in bfloat16): a tie at a cut
        # is broken by sort order, which transformers leaves to torch.sort and dotf to the token id
        logits = torch.stack([torch.randperm(vocab, generator=g) / 32 for _ in range(3)]).to(dtype)
    else:
        logits = (torch.randn(3, vocab, generator=g, dtype=torch.float64) * 3).to(dtype)
    got = ops.warped_probabilities(logits, *warp)
    want = reference_probs(logits, *warp)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(got > 0, want > 0), "the same tokens must survive the warpers"
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got.to(torch.float64), want, atol=tol, rtol=tol * 10)


def test_minus_inf_logits_are_removed_tokens_and_bad_rows_raise():
    logits = torch.tensor([[0.0, -float("inf"), 1.0], [2.0, 2.0, -float("inf")]], dtype=torch.float64)
    p = ops.warped_probabilities(logits, 1.0, 0, 1.0, 0.0)
    assert p[0, 1] == 0 and p[1, 2] == 0 and torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    for bad in ([0.0, float("nan"), 1.0], [float("inf"), 0.0, 0.0], [-float("inf")] * 3):
        with pytest.raises(RuntimeError, match="non-finite logits .* at row 1"):
            ops.warped_probabilities(torch.tensor([[0.0, 1.0, 2.0], bad], dtype=torch.float64), 1.0, 0, 1.0, 0.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), r"temperature must be a finite number > 0, got 0"),
    (dict(temperature=float("inf")), "temperature must be a finite number > 0"),
    (dict(top_k=-1), "top_k must be >= 0, got -1"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(min_p=1.0), r"min_p must be in \[0, 1\), got 1"),
])
def test_warp_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ops.warped_probabilities(torch.zeros(1, 4), **kwargs)


def test_sample_rows_is_the_inverse_cdf_in_vocabulary_order():
    p = torch.tensor([[0.1, 0.0, 0.2, 0.7], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    for u, want in [(0.0, [0, 0]), (0.099, [0, 0]), (0.1, [2, 0]), (0.31, [3, 0]), (0.5, [3, 1]), (0.999999, [3, 1])]:
        assert ops.sample_rows(p, torch.full((2,), u, dtype=torch.float64)).tolist() == want
    # Unnormalized weights are fine: the draw scales u by the row sum.
    assert ops.sample_rows(p * 3, torch.tensor([0.35, 0.6], dtype=torch.float64)).tolist() == [3, 1]


def random_distribution(g, vocab, zeros=0):
    x = torch.rand(vocab, generator=g, dtype=torch.float64) ** 3
    x[torch.randperm(vocab, generator=g)[:zeros]] = 0
    return x / x.sum()


@pytest.mark.parametrize("vocab,zeros", [(2, 0), (5, 1), (16, 4), (50, 10)])
def test_acceptance_and_residual_reproduce_the_target_exactly(vocab, zeros):
    """sum_x q(x) * P(emit y | draft x) == p(y): the draft is drawn from q, kept with min(1, p/q), else
    replaced from norm(max(0, p - q)). Enumerated analytically with the sampler's own formulas."""
    g = torch.Generator().manual_seed(vocab)
    for _ in range(20):
        p, q = random_distribution(g, vocab, zeros), random_distribution(g, vocab, zeros)
        out = sum(q[x] * ops.accept_output_distribution(p, q, x) for x in range(vocab) if q[x] > 0)
        torch.testing.assert_close(out, p, atol=1e-12, rtol=0)
        # q == p: every draft is kept.
        for x in range(vocab):
            if p[x] > 0:
                torch.testing.assert_close(ops.accept_output_distribution(p, p, x), torch.eye(vocab, dtype=torch.float64)[x])
        # A lookup draft (q = its indicator): whatever x was proposed, the emitted token follows p.
        for x in range(vocab):
            torch.testing.assert_close(ops.accept_output_distribution(p, None, x), p, atol=1e-12, rtol=0)


def test_speculative_accept_follows_its_uniforms():
    """The op keeps draft i iff u_i < p(x)/q(x) and draws the replacement from the residual's CDF with the
    last uniform, so its decisions are the analytic procedure's, not an approximation of it."""
    p = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.4, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)
    drafts = torch.tensor([1, 0])
    no_lookup = torch.zeros(2, dtype=torch.bool)

    def run(u0, u1, u2, lookup=no_lookup):
        verdict, ratios = ops.speculative_accept(p, q, drafts, lookup, torch.tensor([u0, u1, u2], dtype=torch.float64))
        return verdict.tolist(), ratios

    ratio = 0.3 / 0.4  # draft 1 at row 0
    assert run(ratio - 1e-9, 0.0, 0.0)[0][0] >= 1
    (accepted, nxt), ratios = run(ratio + 1e-9, 0.0, 0.5)
    assert accepted == 0 and ratios[0].item() == pytest.approx(ratio) and torch.isnan(ratios[1])
    # residual of row 0: max(0, p - q) = [0, 0, 0.4] -> token 2 whatever u
    assert nxt == 2
    # row 1, draft 0: p/q = 2 -> always kept; then the bonus is drawn from p[2] with the last uniform
    (accepted, nxt), ratios = run(0.0, 0.999, 0.15)
    assert accepted == 2 and nxt == 1 and ratios.tolist() == pytest.approx([ratio, 1.0])
    # lookup drafts: kept with probability p(x)
    lookup = torch.ones(2, dtype=torch.bool)
    assert run(0.29, 0.0, 0.0, lookup)[0][0] >= 1 and run(0.31, 0.0, 0.0, lookup)[0][0] == 0


def test_speculative_accept_bad_arguments():
    p, q = torch.rand(3, 5, dtype=torch.float64), torch.rand(2, 5, dtype=torch.float64)
    u = torch.rand(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"drafts\[1\] = 9 is outside the vocabulary \[0, 5\)"):
        ops.speculative_accept(p, q, torch.tensor([0, 9]), torch.zeros(2, dtype=torch.bool), u)
    with pytest.raises(ValueError, match=r"p.size\(0\) must be 2"):
        ops.speculative_accept(p, q[:1], torch.tensor([0]), torch.zeros(1, dtype=torch.bool), u[:2])
    with pytest.raises(TypeError, match="uniforms must have dtype"):
        ops.speculative_accept(p, q, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.bool), u.float())
