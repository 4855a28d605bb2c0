"""Speculative decoding is lossless by construction, checked token for token: asd and dotf (every draft
source, the cost rule, the margin exit) return exactly the tokens of plain greedy decoding, on tiny models
of every architecture and on real prompts of the real model, up to EOS or max_new_tokens."""
import functools

import pytest
import torch

import dotf
from conftest import make_tiny_hf, real_prompts, smollm2_dotf


SETTINGS = [(0.99, 12), (0.985, 4), (0.995, 8), (0.98, 12)]


@pytest.mark.parametrize("threshold,max_draft,gamma", [(0.0, 4, 0.6), (-1.0, 12, 0.3), (0.9, 2, 0.9)])
def test_asd_equals_ar_on_tiny_models(tiny_arch, threshold, max_draft, gamma):
    m = dotf.load(make_tiny_hf(tiny_arch, dtype=torch.float64), dtype=torch.float64)
    ids = torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(3)).tolist()
    ar = m.generate(ids, max_new_tokens=60, strategy="ar")
    asd = m.generate(ids, max_new_tokens=60, strategy="asd", threshold=threshold, budget=1.0, max_draft=max_draft,
                     gamma=gamma)
    assert asd.tokens == ar.tokens


@functools.lru_cache(maxsize=None)
def _ar_reference(index: int, max_new: int) -> tuple:
    _, ids = real_prompts(10, 10)[index]
    return tuple(smollm2_dotf(torch.float64).generate(ids, max_new_tokens=max_new, strategy="ar").tokens)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(20))
def test_asd_lossless_float64_real_prompts(index):
    name, ids = real_prompts(10, 10)[index]
    threshold, max_draft = SETTINGS[index % len(SETTINGS)]
    res = smollm2_dotf(torch.float64).generate(ids, max_new_tokens=128, strategy="asd", threshold=threshold,
                                               max_draft=max_draft)
    assert tuple(res.tokens) == _ar_reference(index, 128), name
    assert res.stats["drafted"] > 0, "the draft must actually have been used"


# dotf's variants for the real-prompt test: its defaults, the cost rule (re-selecting online), the
# model draft alone and lookup alone (which isolate the two draft sources).
DOTF_VARIANTS = [
    {},
    {"selection": "cost", "cost_warmup_rounds": 1, "reselect_every": 4},
    {"lookup": False, "break_even": False},
    {"draft": "same", "threshold": 1.0, "lookup": True},  # nothing skipped, same weights: lookup drafts only
    {"draft_exit": "margin", "margin": 0.2},  # dotf's margin exit on the int8 draft
    {"cost_draft_length": True, "break_even": False},  # rounds capped by the measured costs
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(20))
def test_dotf_lossless_float64_real_prompts(index):
    # The int8 draft (its own kernel and rounding), lookup drafts, break-even fallback and the cost rule
    # only choose what is proposed: the output must be the full model's greedy output exactly.
    name, ids = real_prompts(10, 10)[index]
    options = DOTF_VARIANTS[index % len(DOTF_VARIANTS)]
    res = smollm2_dotf(torch.float64).generate(ids, max_new_tokens=128, strategy="dotf", **options)
    assert tuple(res.tokens) == _ar_reference(index, 128), (name, options)
    drafted = res.stats["drafted_by_source"]
    assert sum(drafted.values()) > 0, (name, options, res.stats)
    if options.get("lookup", True) is False:
        assert drafted["lookup"] == 0 and drafted["model"] > 0, (name, options, drafted)
    if options.get("draft") == "same":
        assert drafted["model"] == 0, (name, options, drafted)


def test_eos_and_max_new_tokens_are_exact():
    m = dotf.load(make_tiny_hf("llama-tied"))
    ids = list(range(60, 80))
    ar = m.generate(ids, max_new_tokens=40, strategy="ar").tokens
    eos = ar[17]
    stop = ar.index(eos) + 1
    for strategy in ("ar", "asd"):
        res = m.generate(ids, max_new_tokens=40, strategy=strategy, eos_token_id=eos, threshold=0.0, budget=1.0)
        assert res.tokens == ar[:stop] and res.stats["stop_reason"] == "eos"
        for n in (1, 2, 7):
            assert m.generate(ids, max_new_tokens=n, strategy=strategy, threshold=0.0).tokens == ar[:n]


# ---- the draft's int8 KV mirror (draft_kv="int8") --------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("strategy,options", [
    ("asd", dict(threshold=0.0, budget=1.0, max_draft=6)),
    ("dotf", dict(lookup=False, break_even=False, threshold=0.0, budget=1.0)),
    ("dotf", {}),  # the preset: int8 weights, lookup, break-even fallback
])
def test_int8_kv_draft_equals_ar_on_tiny_models(tiny_arch, dtype, strategy, options):
    # The draft's attention reads the int8 mirror, the verify pass the exact rows: the tokens are the
    # full model's, in float32 too (the verify rows are bitwise a decoding step's, mirror or not).
    m = dotf.load(make_tiny_hf(tiny_arch, dtype=dtype), dtype=dtype)
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(5)).tolist()
    ar = m.generate(ids, max_new_tokens=60, strategy="ar")
    res = m.generate(ids, max_new_tokens=60, strategy=strategy, draft_kv="int8", **options)
    assert res.tokens == ar.tokens
    s = res.stats
    assert s["drafted"] > 0 and 0 < s["kv_mirror_bytes"] < s["kv_cache_bytes"] / 3


def test_auto_draft_kv_follows_the_byte_counts(tiny_arch):
    # dotf's draft_kv="auto" (speculative/policies/draft_kv.h; its rule unit-tested in
    # tests/cpp/speculative/test_draft_kv.cpp) against this model's own figures: the exact cache while the
    # cache's rows (prompt + max_new_tokens positions) are at most 15% of the int8 draft's bytes, then the
    # mirror, then the mirror through a 1024-key window once even its rows are more than 25%. The stats say
    # what ran, the mirror's bytes agree, and the tokens stay the full model's.
    m = dotf.load(make_tiny_hf(tiny_arch, dtype=torch.float32), dtype=torch.float32)
    ids = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(5)).tolist()
    m.generate(ids[:4], max_new_tokens=1, strategy="dotf")  # builds the int8 draft
    exact = m.kv_cache_bytes(1)
    mirror = m.kv_cache_bytes(1, draft_kv="int8") - exact
    new = 4  # a short call: the positions are mostly prompt, so the thresholds fall on prompt lengths
    mirror_from = int(0.15 * m.draft_bytes / exact) + 1  # positions
    window_from = int(0.25 * m.draft_bytes / mirror) + 1
    assert new < mirror_from < window_from - 20 and window_from + 20 < 400
    for positions, reads in [(mirror_from - 1, ("same", 0)), (mirror_from, ("int8", 0)),
                             (window_from - 1, ("int8", 0)), (window_from, ("int8", 1024))]:
        prompt = ids[:positions - new]
        ar = m.generate(prompt, max_new_tokens=new, strategy="ar")
        assert "draft_kv" not in ar.stats  # ar never drafts
        res = m.generate(prompt, max_new_tokens=new, strategy="dotf")
        assert res.tokens == ar.tokens, positions
        assert (res.stats["draft_kv"], res.stats["draft_window"]) == reads, positions
        assert (res.stats["kv_mirror_bytes"] > 0) == (reads[0] == "int8"), positions
    # A window the caller sets is kept; draft_kv="same" is kept; the paper's method reads the exact cache.
    long = ids[:window_from]
    assert m.generate(long, max_new_tokens=new, strategy="dotf", draft_window=16).stats["draft_window"] == 16
    assert m.generate(long, max_new_tokens=new, strategy="dotf", draft_kv="same").stats["draft_kv"] == "same"
    asd = m.generate(long, max_new_tokens=new, strategy="asd")
    assert asd.stats["draft_kv"] == "same" and asd.stats["kv_mirror_bytes"] == 0


# ---- the draft's attention window (draft_window) ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("strategy,options", [
    ("asd", dict(threshold=0.0, budget=1.0, max_draft=6)),
    ("dotf", dict(lookup=False, break_even=False, threshold=0.0, budget=1.0)),
    ("dotf", dict(draft_kv="int8")),
])
def test_windowed_draft_equals_ar_on_tiny_models(tiny_arch, dtype, strategy, options):
    # A window of 8 keys (plus the 4 sinks) hides most of a 40-token prompt from the draft; the verify
    # pass attends every key, so the tokens stay the full model's.
    m = dotf.load(make_tiny_hf(tiny_arch, dtype=dtype), dtype=dtype)
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(6)).tolist()
    ar = m.generate(ids, max_new_tokens=60, strategy="ar")
    res = m.generate(ids, max_new_tokens=60, strategy=strategy, draft_window=8, **options)
    assert res.tokens == ar.tokens
    assert res.stats["drafted"] > 0


def test_window_changes_what_the_draft_sees(tiny_arch):
    # The low-level forward under a window differs from full attention once keys fall outside it, and
    # equals it while the window still covers every key.
    m = dotf.load(make_tiny_hf(tiny_arch, dtype=torch.float64), dtype=torch.float64)
    ids = torch.randint(0, 256, (41,), generator=torch.Generator().manual_seed(7)).tolist()

    def last_logits(n, window):
        cache = m.new_cache(64)
        m.forward(ids[:n - 1], 0, cache)
        return m.forward(ids[n - 1:n], n - 1, cache, window=window)[0]

    assert torch.equal(last_logits(12, 8), last_logits(12, 0))  # 4 sinks + 8 recent cover 12 keys
    assert not torch.allclose(last_logits(41, 8), last_logits(41, 0))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(10))
def test_int8_kv_draft_lossless_float32_real_prompts(index):
    name, ids = real_prompts(5, 5)[index]
    m = smollm2_dotf(torch.float32)
    ar = m.generate(ids, max_new_tokens=128, strategy="ar")
    for draft_kv in ("int8", "same"):
        res = m.generate(ids, max_new_tokens=128, strategy="dotf", draft_kv=draft_kv)
        assert res.tokens == ar.tokens, (name, draft_kv)
        assert (res.stats["kv_mirror_bytes"] > 0) == (draft_kv == "int8")
