"""Sampling end to end on CUDA: a tiny model loaded with dotf.load(..., device="cuda") samples with every
strategy (ar, asd, dotf, lookup drafts), the warp, the draws and the acceptance test running on the device.
A seed reproduces a call (with and without CUDA graphs), other seeds differ, top_k=1 is greedy, the tokens
follow the model's own distribution, and non-finite logits raise. Skipped without a CUDA device or a CUDA
build of dotf.
"""
from __future__ import annotations

import functools

import pytest
import torch

import dotf
from dotf import _C

transformers = pytest.importorskip("transformers")
from conftest import make_tiny_hf  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not _C.build_info()["cuda"], reason="dotf was built without CUDA kernels"),
]

ARCH = "llama-gqa"
STRATEGIES = {
    "ar": dict(strategy="ar"),
    "asd": dict(strategy="asd", draft_attention=[True, False, True, False]),  # a fixed plan: surely drafts
    "dotf": dict(strategy="dotf"),
    "lookup": dict(strategy="asd", threshold=1.0, lookup=True, lookup_min_ngram=1),  # q one-hot
}
WARP = dict(temperature=0.8, top_p=0.9)


@functools.lru_cache(maxsize=None)
def model():
    return dotf.load(make_tiny_hf(ARCH, seed=1), device="cuda")


def prompt(seed: int = 0, length: int = 24) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (length,), generator=g).tolist()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_sampling_on_cuda_runs_and_a_seed_reproduces_it(name):
    m, kw = model(), STRATEGIES[name]
    runs = [m.generate(prompt(), 32, do_sample=True, seed=s, **WARP, **kw) for s in (7, 7, 8, 9)]
    for r in runs:
        assert len(r.tokens) == 32 and all(0 <= t < 256 for t in r.tokens)
    assert runs[0].tokens == runs[1].tokens, "the same seed gave different tokens"
    assert len({tuple(r.tokens) for r in runs[1:]}) > 1, "different seeds gave the same tokens"
    if name == "asd":
        assert runs[0].stats["rounds"] > 0 and runs[0].stats["drafted"] > 0, runs[0].stats
    eager = m.generate(prompt(), 32, do_sample=True, seed=7, cuda_graphs=False, **WARP, **kw)
    assert eager.tokens == runs[0].tokens, "CUDA graphs changed the sampled tokens"
    g1, g2 = torch.Generator(device="cuda").manual_seed(3), torch.Generator(device="cuda").manual_seed(3)
    assert m.generate(prompt(1), 16, do_sample=True, generator=g1, **kw).tokens == \
        m.generate(prompt(1), 16, do_sample=True, generator=g2, **kw).tokens


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_top_k_one_is_greedy_on_cuda(name):
    m, kw = model(), STRATEGIES[name]
    greedy = m.generate(prompt(2), 32, **kw)
    sampled = m.generate(prompt(2), 32, do_sample=True, top_k=1, seed=1, **kw)
    assert sampled.tokens == greedy.tokens


def test_first_token_follows_the_warped_distribution():
    """The first sampled token over many seeds against the warped distribution of the prompt's logits:
    chi-square over the tokens expected >= 10 times, the rest pooled, below the statistic's 0.9998 quantile
    (Wilson-Hilferty, z = 3.5)."""
    m = model()
    ids = prompt(3)
    warp = dict(temperature=0.5, top_k=0, top_p=0.95, min_p=0.0)
    p = _C.testing.ops.warped_probabilities(m.forward_logits(ids)[-1:].float(), *warp.values())[0].double().cpu()
    n = 2000
    counts = torch.zeros(p.numel(), dtype=torch.float64)
    for s in range(n):
        counts[m.generate(ids, 1, do_sample=True, seed=s, strategy="ar", **warp).tokens[0]] += 1
    assert counts[p == 0].sum() == 0, "a token the warpers removed was sampled"
    likely = p * n >= 10
    expected = torch.cat([p[likely] * n, (p[~likely] * n).sum().reshape(1)])
    observed = torch.cat([counts[likely], counts[~likely].sum().reshape(1)])
    keep = expected > 0
    chi2 = float((((observed - expected) ** 2)[keep] / expected[keep]).sum())
    dof = max(1, int(keep.sum()) - 1)
    bound = dof * (1 - 2 / (9 * dof) + 3.5 * (2 / (9 * dof)) ** 0.5) ** 3
    assert chi2 < bound, (chi2, dof)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_non_finite_logits_raise_on_cuda(name):
    hf = make_tiny_hf(ARCH, seed=1)
    with torch.no_grad():
        hf.lm_head.weight[7].fill_(float("inf"))
    m = dotf.load(hf, device="cuda")
    for _ in range(2):  # and again: the error is not a one-off state
        with pytest.raises(RuntimeError, match="non-finite logits"):
            m.generate(prompt(), 8, do_sample=True, seed=0, **STRATEGIES[name])
