"""Property-based tests (hypothesis): random sequences of cache operations keep the accepted KV rows
equal to a plain AR run's, and every speculative configuration returns exactly the AR tokens.
Bounded (max_examples ~25, tiny float64 models cached at module level) to stay fast."""
from __future__ import annotations

import functools
import inspect
import os

import pytest
import torch

import dotf
from conftest import make_tiny_hf

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ARCHS = ("llama-gqa", "qwen2-bias")
VOCAB = 256
# DOTF_HYPOTHESIS_EXAMPLES=400 for a longer search (e.g. nightly).
EXAMPLES = int(os.environ.get("DOTF_HYPOTHESIS_EXAMPLES", "0")) or None
SETTINGS = dict(deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.lru_cache(maxsize=None)
def tiny(arch: str):
    return dotf.load(make_tiny_hf(arch, dtype=torch.float64), dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def ar_run(arch: str, prompt: tuple, max_new: int):
    """(tokens, cache) of plain greedy decoding."""
    m = tiny(arch)
    cache = m.new_cache(len(prompt) + max_new)
    return tuple(m.generate(list(prompt), max_new_tokens=max_new, cache=cache).tokens), cache


@functools.lru_cache(maxsize=None)
def full_forward_cache(arch: str, seq: tuple):
    m = tiny(arch)
    cache = m.new_cache(len(seq))
    m.forward(list(seq), 0, cache, logits="none")
    return cache


def assert_rows_equal(m, cache, ref, rows: int):
    for layer in range(m.num_layers):
        torch.testing.assert_close(cache.keys(layer)[:rows], ref.keys(layer)[:rows], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(cache.values(layer)[:rows], ref.values(layer)[:rows], rtol=1e-10, atol=1e-10)


def _has_weights_arg(m) -> bool:
    return "weights" in inspect.signature(m.forward).parameters


tokens = st.integers(0, VOCAB - 1)


# ---- cache operations ---------------------------------------------------------------------------
@settings(max_examples=EXAMPLES or 25, **SETTINGS)
@given(data=st.data())
def test_random_cache_operations_keep_accepted_rows_equal_to_ar(data):
    arch = data.draw(st.sampled_from(ARCHS), label="arch")
    m = tiny(arch)
    L, N = m.num_layers, 40
    seq = data.draw(st.lists(tokens, min_size=N, max_size=N), label="sequence")
    ref = full_forward_cache(arch, tuple(seq))
    cache = m.new_cache(N + 8)  # room for drafts past the sequence's end
    n = data.draw(st.integers(1, 12), label="prompt")
    m.forward(seq[:n], 0, cache, logits=data.draw(st.sampled_from(["none", "last", "all"])))
    int8 = _has_weights_arg(m)
    mirror = data.draw(st.booleans(), label="int8 KV mirror")  # drafts then read it; the exact rows stay AR's
    if mirror:
        cache.add_int8_mirror()

    for _ in range(data.draw(st.integers(1, 10), label="ops")):
        op = data.draw(st.sampled_from(["round", "round", "round", "draft_only", "rollback"]))
        if op == "rollback":
            n = data.draw(st.integers(0, n), label="rollback to")
            cache.truncate(n)
            continue
        if n >= N:
            break
        k = data.draw(st.integers(1, min(8, N - n)), label="draft length")
        # Draft pass: random tokens under a random layer plan (skipped sublayers leave their rows alone).
        plan_a = data.draw(st.lists(st.booleans(), min_size=L, max_size=L), label="draft attention")
        plan_m = data.draw(st.lists(st.booleans(), min_size=L, max_size=L), label="draft mlp")
        drafts = data.draw(st.lists(tokens, min_size=k, max_size=k), label="drafts")
        kw = dict(attention=plan_a, mlp=plan_m, similarity=data.draw(st.booleans()),
                  logits=data.draw(st.sampled_from(["none", "last", "all"])))
        if int8 and data.draw(st.booleans(), label="int8 draft weights"):
            kw["weights"] = "int8"
        if mirror and data.draw(st.booleans(), label="draft reads the mirror"):
            kw["kv"] = "int8"
        m.forward(drafts, n, cache, **kw)
        assert cache.length == n + k
        if op == "draft_only":
            cache.truncate(n)
            continue
        # Verify pass: full model over the true tokens up to the acceptance point, then wrong ones.
        accepted = data.draw(st.integers(0, k), label="accepted")
        wrong = data.draw(st.lists(tokens, min_size=k - accepted, max_size=k - accepted), label="rejected")
        m.forward(seq[n:n + accepted] + wrong, n, cache, similarity=data.draw(st.booleans()),
                  logits=data.draw(st.sampled_from(["none", "last", "all"])))
        cache.truncate(n + accepted)
        n += accepted
    assert cache.length == n
    assert_rows_equal(m, cache, ref, n)
    # The surviving rows are a valid prefix: continuing from them gives the full model's logits.
    if 0 < n < N:
        logits, _, _ = m.forward(seq[n:], n, cache)
        torch.testing.assert_close(logits, m.forward_logits(seq)[n:], rtol=1e-9, atol=1e-9)


# ---- speculative == autoregressive -------------------------------------------------------------------
@st.composite
def prompts(draw):
    if draw(st.booleans()):  # repetitive, so that n-gram lookup finds matches
        pattern = draw(st.lists(tokens, min_size=1, max_size=5))
        prefix = draw(st.lists(tokens, max_size=4))
        reps = draw(st.integers(2, 8))
        return tuple((prefix + pattern * reps)[:32])
    return tuple(draw(st.lists(tokens, min_size=1, max_size=24)))


@st.composite
def spec_options(draw, num_layers: int):
    min_ngram = draw(st.integers(1, 3))
    adaptive_gamma = draw(st.booleans())
    o = dict(
        threshold=draw(st.floats(-1.0, 1.0)),
        gamma=draw(st.floats(0.01, 0.99)),
        draft_exit=draw(st.sampled_from(["probability", "margin"])),
        margin=draw(st.floats(0.0, 5.0)),
        alpha=draw(st.floats(0.01, 1.0)),
        max_draft=draw(st.integers(1, 12)),
        budget=draw(st.floats(0.0, 1.0)),
        keep_first=draw(st.integers(0, num_layers + 1)),
        similarity=draw(st.sampled_from(["mean", "last"])),
        draft=draw(st.sampled_from(["same", "int8"])),
        lookup=draw(st.booleans()),
        lookup_every_step=draw(st.booleans()),
        lookup_check=draw(st.booleans()),
        lookup_max_tokens=draw(st.integers(1, 12)),
        lookup_min_ngram=min_ngram,
        lookup_max_ngram=draw(st.integers(min_ngram, 4)),
        break_even=draw(st.booleans()),
        cost_draft_length=draw(st.booleans()),
        reselect_every=draw(st.sampled_from([0, 0, 1, 2, 5])),
        adaptive_gamma=adaptive_gamma,
        carry_gamma=adaptive_gamma and draw(st.booleans()),  # a fixed gamma cannot be carried
        selection=draw(st.sampled_from(["threshold", "cost"])),
        sensitivity=draw(st.floats(0.0, 50.0)),
        cost_warmup_rounds=draw(st.integers(1, 4)),
    )
    if draw(st.integers(0, 4)) == 0:  # now and then a fixed draft plan instead of selection
        o["draft_attention"] = draw(st.lists(st.booleans(), min_size=num_layers, max_size=num_layers))
        o["draft_mlp"] = draw(st.lists(st.booleans(), min_size=num_layers, max_size=num_layers))
    return o


@settings(max_examples=EXAMPLES or 30, **SETTINGS)
@given(data=st.data())
def test_speculative_strategies_equal_ar(data):
    arch = data.draw(st.sampled_from(ARCHS), label="arch")
    m = tiny(arch)
    prompt = data.draw(prompts(), label="prompt")
    max_new = data.draw(st.integers(1, 40), label="max_new_tokens")
    strategy = data.draw(st.sampled_from(["asd", "dotf"]), label="strategy")
    options = data.draw(spec_options(m.num_layers), label="options")
    ar, ar_cache = ar_run(arch, prompt, max_new)

    expected, eos = list(ar), None
    if data.draw(st.integers(0, 3)) == 0:  # stop at a token the model does produce
        eos = data.draw(st.sampled_from(ar), label="eos")
        expected = expected[: expected.index(eos) + 1]

    cache = m.new_cache(len(prompt) + max_new) if data.draw(st.booleans(), label="own cache") else None
    streamed = []
    res = m.generate(list(prompt), max_new_tokens=max_new, strategy=strategy, eos_token_id=eos, cache=cache,
                     on_tokens=streamed.extend, **options)
    assert res.tokens == expected
    assert streamed == expected
    assert res.stats["stop_reason"] == ("eos" if eos is not None else "max_new_tokens")
    if cache is not None and eos is None:
        rows = len(prompt) + max_new - 1  # every token but the last was fed to the model
        assert cache.length >= rows
        assert_rows_equal(m, cache, ar_cache, rows)
