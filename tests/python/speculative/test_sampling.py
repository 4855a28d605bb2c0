"""Speculative sampling end to end: every strategy's sampled output is distributed as the model's own
sampling (tested statistically on a tiny model), calls are reproducible from a seed, top_k=1 is greedy,
and sampling options are validated."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

import dotf

transformers = pytest.importorskip("transformers")

PROMPT = [1, 5, 3, 7, 2, 5, 3]
# Speculative strategies under test, each against "ar": the paper's draft (a fixed plan skipping three
# attention sublayers), dotf (int8 self-draft with lookups checked by the draft model), and lookup drafts
# alone (nothing skipped, so the model does not draft; deterministic proposals, q = their indicator).
STRATEGIES = {
    "asd": dict(strategy="asd", draft_attention=[True, False, False, False]),
    "dotf": dict(strategy="dotf", lookup_min_ngram=1),
    "lookup": dict(strategy="asd", threshold=1.0, lookup=True, lookup_min_ngram=1),
}


@pytest.fixture(scope="module")
def tiny():
    """A tiny Llama with a 16-token vocabulary and peaked logits, so that a few dozen outcomes of three
    tokens hold most of the probability."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for i, layer in enumerate(hf.model.layers):
            layer.self_attn.o_proj.weight.mul_(0.3 + 0.5 * i)
        hf.lm_head.weight.mul_(8.0)
    return dotf.load(hf)


def first_tokens(model, n: int, warp: dict, **kw) -> collections.Counter:
    """Counts of the first three sampled tokens over seeds 0..n-1 (five generated: the first round drafts
    up to four, so tokens two and three come from drafts that were accepted or replaced)."""
    counts = collections.Counter()
    for seed in range(n):
        counts[tuple(model.generate(PROMPT, 5, do_sample=True, seed=seed, **warp, **kw).tokens[:3])] += 1
    return counts


def chi_square(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample chi-square statistic of homogeneity for count vectors of equal totals."""
    pooled = a + b
    keep = pooled > 0
    return float((((a - b)[keep]) ** 2 / pooled[keep]).sum())


def pooled_cells(reference: collections.Counter, other: collections.Counter, min_count: int = 10):
    """Count vectors over the outcomes seen at least min_count times in the reference; the rest pooled."""
    cells = [k for k, v in reference.items() if v >= min_count]
    def vec(c):
        v = [c.get(k, 0) for k in cells]
        return np.array(v + [sum(c.values()) - sum(v)], dtype=np.float64)
    return vec(reference), vec(other)


def critical_value_and_power(p: np.ndarray, n: int, alpha: float, rng: np.random.Generator, sims: int = 2000):
    """Monte Carlo: the statistic's (1 - alpha) quantile when both samples come from p, and the power
    against moving 0.02 of probability from the most likely outcome to the second (total variation 0.02)."""
    null = [chi_square(rng.multinomial(n, p).astype(float), rng.multinomial(n, p).astype(float)) for _ in range(sims)]
    crit = float(np.quantile(null, 1 - alpha))
    order = np.argsort(-p)
    alt = p.copy()
    alt[order[0]] -= 0.02
    alt[order[1]] += 0.02
    hits = [chi_square(rng.multinomial(n, p).astype(float), rng.multinomial(n, alt).astype(float)) > crit
            for _ in range(sims // 4)]
    return crit, float(np.mean(hits))


N = 30000
ALPHA = 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("warp", [dict(temperature=0.8, top_k=4), dict(temperature=0.7, top_k=0, top_p=0.8, min_p=0.05)],
                         ids=["top_k", "top_p_min_p"])
def test_sampled_outputs_follow_the_models_distribution(tiny, warp):
    """For each speculative strategy, the joint distribution of the first three tokens equals plain
    sampling's: a two-sample chi-square test at alpha = 0.01 over N = 30000 fixed seeds per strategy
    (outcomes seen fewer than 10 times pooled). The test also states its own power: the probability that
    a total-variation difference of 0.02 (0.02 moved between the two most likely outcomes) fails it, by
    Monte Carlo on the reference's distribution; it must be at least 0.99."""
    reference = first_tokens(tiny, N, warp, strategy="ar")
    rng = np.random.default_rng(0)
    for name, kw in STRATEGIES.items():
        got = first_tokens(tiny, N, warp, **kw)
        a, b = pooled_cells(reference, got)
        crit, power = critical_value_and_power(a / a.sum(), N, ALPHA, rng)
        assert power >= 0.99, f"the test would miss a TV difference of 0.02 (power {power:.3f}): more samples"
        stat = chi_square(a, b)
        assert stat <= crit, (f"{name}: the first three sampled tokens are not distributed as plain sampling's "
                              f"(chi-square {stat:.1f} > {crit:.1f} over {len(a)} cells, power {power:.3f})")


@pytest.mark.parametrize("name", ["ar", *STRATEGIES])
def test_a_seed_reproduces_a_call_and_other_seeds_differ(tiny, name):
    kw = STRATEGIES.get(name, dict(strategy="ar"))
    runs = [tiny.generate(PROMPT, 12, do_sample=True, seed=s, **kw).tokens for s in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]
    assert len({tuple(r) for r in runs[1:]}) > 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert tiny.generate(PROMPT, 12, do_sample=True, generator=g1, **kw).tokens == \
        tiny.generate(PROMPT, 12, do_sample=True, generator=g2, **kw).tokens
    torch.manual_seed(5)
    a = tiny.generate(PROMPT, 12, do_sample=True, **kw).tokens
    torch.manual_seed(5)
    assert tiny.generate(PROMPT, 12, do_sample=True, **kw).tokens == a


@pytest.mark.parametrize("name", ["ar", *STRATEGIES])
def test_top_k_one_is_greedy(tiny, name):
    kw = STRATEGIES.get(name, dict(strategy="ar"))
    greedy = tiny.generate(PROMPT, 24, **kw)
    sampled = tiny.generate(PROMPT, 24, do_sample=True, top_k=1, seed=1, **kw)
    assert sampled.tokens == greedy.tokens


def test_sampling_statistics(tiny):
    s = tiny.generate(PROMPT, 32, do_sample=True, seed=0, **STRATEGIES["asd"]).stats
    probs = s["mean_acceptance_probability_at"]
    assert len(probs) == len(s["drafted_at"])
    tested = [p for p in probs if p == p]
    assert tested and all(0.0 <= p <= 1.0 for p in tested)
    assert "mean_acceptance_probability_at" not in tiny.generate(PROMPT, 8, **STRATEGIES["asd"]).stats


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(temperature=0.0), ValueError, r"temperature must be a finite number > 0, got 0"),
    (dict(temperature=float("nan")), ValueError, "temperature must be a finite number > 0, got nan"),
    (dict(temperature="hot"), TypeError, "temperature must be a number, got str"),
    (dict(top_k=-1), ValueError, "top_k must be >= 0, got -1"),
    (dict(top_k=2.5), TypeError, "top_k must be an int, got float"),
    (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\], got 0"),
    (dict(top_p=1.01), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(min_p=1.0), ValueError, r"min_p must be in \[0, 1\), got 1"),
    (dict(min_p=-0.1), ValueError, r"min_p must be in \[0, 1\)"),
    (dict(seed=-1), ValueError, r"seed must be in \[0, 2\*\*63\), got -1"),
    (dict(seed="1"), TypeError, "seed must be an int, got str"),
    (dict(seed=1, generator=torch.Generator()), ValueError, "seed or generator, not both"),
    (dict(generator=3), TypeError, "generator must be a torch.Generator, got int"),
    (dict(do_sample=1), TypeError, "do_sample must be a bool, got int"),
])
def test_bad_sampling_options(tiny, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tiny.generate(PROMPT, 4, **{"do_sample": True, **kwargs})


@pytest.mark.parametrize("name", ["temperature", "top_k", "top_p", "min_p", "seed", "generator"])
def test_sampling_options_are_refused_without_do_sample(tiny, name):
    value = {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "min_p": 0.1, "seed": 1, "generator": torch.Generator()}
    with pytest.raises(ValueError, match=f"{name} needs do_sample=True"):
        tiny.generate(PROMPT, 4, **{name: value[name]})
