"""Adaptive self-speculative decoding: lossless by construction, checked token for token."""
import functools
import math

import pytest
import torch

import dotf
from dotf import _C
from conftest import make_tiny_hf, real_prompts, smollm2_dotf

# (threshold, max_draft) settings cycled over the real prompts.
SETTINGS = [(0.99, 12), (0.985, 4), (0.995, 8), (0.98, 12)]


# ---- draft selection rules -------------------------------------------------------------------
def test_selection_threshold_keep_first_and_budget():
    s = [0.999, 0.5, 0.99, 0.995, 0.97, 0.999, 0.992, 0.98]
    assert _C.testing.select_draft_plan(s, threshold=0.99, budget=1.0, keep_first=1) == [2, 3, 5, 6]
    assert _C.testing.select_draft_plan(s, threshold=0.99, budget=1.0, keep_first=0) == [0, 2, 3, 5, 6]
    assert _C.testing.select_draft_plan(s, threshold=0.99, budget=1.0, keep_first=3) == [3, 5, 6]
    # Budget 0.25 of 8 layers = 2: the two most similar candidates (5: 0.999, 3: 0.995).
    assert _C.testing.select_draft_plan(s, threshold=0.99, budget=0.25, keep_first=1) == [3, 5]
    assert _C.testing.select_draft_plan(s, threshold=0.99, budget=0.0, keep_first=1) == []
    assert _C.testing.select_draft_plan(s, threshold=1.0, budget=1.0, keep_first=0) == []
    # NaN (unmeasured) is never dropped; equality with tau counts as passing.
    assert _C.testing.select_draft_plan([0.9, math.nan, 0.99], threshold=0.99, budget=1.0, keep_first=0) == [2]


def test_selection_rejects_out_of_range_options():
    with pytest.raises(ValueError, match="threshold"):
        _C.testing.select_draft_plan([0.9], threshold=1.5)
    with pytest.raises(ValueError, match="budget"):
        _C.testing.select_draft_plan([0.9], threshold=0.9, budget=-0.1)


# ---- adaptive gamma ----------------------------------------------------------------------------
def _gamma_by_hand(gamma, alpha, rounds):
    m, out = 0.0, []
    for accepted, drafted, hit_max in rounds:
        m = 0.5 * m + 0.5 * accepted / drafted
        proposal = gamma + 0.01 if m < alpha else (gamma if hit_max else gamma - 0.01)
        gamma = 0.9 * gamma + 0.1 * proposal
        out.append(gamma)
    return out


def test_adaptive_gamma_matches_hand_computed_sequence():
    rounds = [(1, 4, False), (4, 4, False), (12, 12, True), (12, 12, True), (12, 12, True), (6, 6, False),
              (0, 3, False)]
    got = _C.testing.gamma_sequence(0.6, 0.9, rounds)
    assert got == pytest.approx(_gamma_by_hand(0.6, 0.9, rounds), abs=1e-15)
    # m runs 0.125, 0.5625, 0.78125, 0.890625 (< alpha: gamma rises by 0.001 each round), then
    # 0.9453 at max length (gamma holds), 0.9727 short of max (gamma falls), 0.4863 (rises again).
    steps = [b - a for a, b in zip([0.6] + got, got)]
    assert steps[:4] == pytest.approx([0.001] * 4, abs=1e-12)
    assert steps[4] == pytest.approx(0.0, abs=1e-12)
    assert steps[5] == pytest.approx(-0.001, abs=1e-12)
    assert steps[6] == pytest.approx(0.001, abs=1e-12)


# ---- losslessness -----------------------------------------------------------------------------
@pytest.mark.parametrize("threshold,max_draft,gamma", [(0.0, 4, 0.6), (-1.0, 12, 0.3), (0.9, 2, 0.9)])
def test_asd_equals_ar_on_tiny_models(tiny_arch, threshold, max_draft, gamma):
    m = dotf.load(make_tiny_hf(tiny_arch, dtype=torch.float64), dtype=torch.float64)
    ids = torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(3)).tolist()
    ar = m.generate(ids, max_new_tokens=60)
    asd = m.generate(ids, max_new_tokens=60, strategy="asd", threshold=threshold, budget=1.0, max_draft=max_draft,
                     gamma=gamma)
    assert asd.tokens == ar.tokens


@functools.lru_cache(maxsize=None)
def _ar_reference(index: int, max_new: int) -> tuple:
    _, ids = real_prompts(10, 10)[index]
    return tuple(smollm2_dotf(torch.float64).generate(ids, max_new_tokens=max_new).tokens)


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


@pytest.mark.parametrize("draft", ["same", "int8"])
def test_margin_exit_is_lossless_and_thresholds_the_logit_margin(draft):
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(30, 50))
    ar = m.generate(ids, max_new_tokens=60)
    kw = dict(strategy="dotf", draft=draft, threshold=0.0, budget=1.0, lookup=False, break_even=False,
              draft_exit="margin", adaptive_gamma=False, max_draft=6)
    # No real margin reaches 1e6: every round stops after its first draft token.
    stop_at_once = m.generate(ids, max_new_tokens=60, margin=1e6, **kw)
    assert stop_at_once.tokens == ar.tokens
    s = stop_at_once.stats
    assert s["draft_exit"] == "margin" and s["initial_gamma"] == s["final_gamma"] == 1e6
    assert s["rounds"] > 1 and s["drafted_at"][0] == s["rounds"] and sum(s["drafted_at"][1:]) == 0, s
    # Margin 0 never stops a draft (a tie gives 0, not less): rounds run to max_draft.
    never_stop = m.generate(ids, max_new_tokens=60, margin=0.0, **kw)
    assert never_stop.tokens == ar.tokens
    assert never_stop.stats["drafted_at"][5] > 0, never_stop.stats
    # Both strategies default to the paper's probability exit (README "Draft exit": the margin rule
    # measured no faster).
    for strategy in ("asd", "dotf"):
        assert m.generate(ids, max_new_tokens=8, strategy=strategy).stats["draft_exit"] == "probability"


@pytest.mark.parametrize("draft", ["same", "int8"])
def test_cost_selection_skips_when_acceptance_is_free_and_stays_lossless(draft):
    # sensitivity 0 tells the cost model that skipping never costs acceptance: it must skip sublayers
    # (all measured costs are > 0), predict the measured base acceptance, and the output stays exact.
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(30, 50))
    ar = m.generate(ids, max_new_tokens=60)
    res = m.generate(ids, max_new_tokens=60, strategy="dotf", draft=draft, lookup=False, break_even=False,
                     selection="cost", sensitivity=0.0, cost_warmup_rounds=1)
    s = res.stats
    assert res.tokens == ar.tokens
    assert s.get("cost_selections", 0) >= 1, s
    assert s["skipped_attention_layers"] or s["skipped_mlp_layers"], s
    assert 0.0 <= s["predicted_acceptance"] <= 1.0 and s["predicted_gain"] > 1.0, s
    # A huge sensitivity makes every skip too expensive: nothing is skipped, predicted gain 1.
    res = m.generate(ids, max_new_tokens=60, strategy="dotf", draft=draft, lookup=False, break_even=False,
                     selection="cost", sensitivity=1e6, cost_warmup_rounds=1)
    assert res.tokens == ar.tokens
    assert not res.stats["skipped_attention_layers"] and not res.stats["skipped_mlp_layers"]
    assert res.stats["predicted_gain"] == 1.0


# ---- rollback invariants ------------------------------------------------------------------------
def test_cache_after_speculation_equals_plain_decoding():
    m = dotf.load(make_tiny_hf("qwen2-bias", dtype=torch.float64), dtype=torch.float64)
    ids = list(range(20, 40))
    caches = {}
    for strategy in ("ar", "asd"):
        cache = m.new_cache(len(ids) + 50)
        res = m.generate(ids, max_new_tokens=50, strategy=strategy, threshold=0.0, budget=1.0, max_draft=5,
                         cache=cache)
        caches[strategy] = (cache, res)
    (ar_cache, ar), (asd_cache, asd) = caches["ar"], caches["asd"]
    assert asd.tokens == ar.tokens
    assert asd.stats["rounds"] > 0 and asd.stats["accepted"] < asd.stats["drafted"], "needs rejections to test"
    rows = len(ids) + len(ar.tokens) - 1  # every token but the last has been fed to the model
    assert ar_cache.length == rows and asd_cache.length >= rows
    for layer in range(m.num_layers):
        for a, b in ((ar_cache.keys(layer), asd_cache.keys(layer)), (ar_cache.values(layer), asd_cache.values(layer))):
            torch.testing.assert_close(a[:rows], b[:rows], rtol=1e-10, atol=1e-12)


# ---- statistics and streaming ---------------------------------------------------------------------
def test_stats_are_consistent_and_streaming_delivers_every_token():
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(30, 50))
    chunks = []
    res = m.generate(ids, max_new_tokens=45, strategy="asd", threshold=0.0, budget=1.0, on_tokens=chunks.append)
    s = res.stats
    assert [t for c in chunks for t in c] == res.tokens
    assert len(res.tokens) == s["new_tokens"] == 45
    assert 0 <= s["accepted"] <= s["drafted"]
    assert s["round_tokens"] <= s["accepted"] + s["rounds"]
    assert s["new_tokens"] <= 1 + s["round_tokens"] + (s["new_tokens"] - 1 - s["round_tokens"])
    assert sum(s["drafted_at"]) == s["drafted"] and sum(s["accepted_at"]) == s["accepted"]
    assert all(a <= d for a, d in zip(s["accepted_at"], s["drafted_at"]))
    assert s["acceptance_rate"] == pytest.approx(s["accepted"] / s["drafted"])
    assert len(s["layer_similarity"]) == m.num_layers
    assert s["skipped_attention_layers"] and 0 not in s["skipped_attention_layers"]


def test_eos_and_max_new_tokens_are_exact():
    m = dotf.load(make_tiny_hf("llama-tied"))
    ids = list(range(60, 80))
    ar = m.generate(ids, max_new_tokens=40).tokens
    eos = ar[17]
    stop = ar.index(eos) + 1
    for strategy in ("ar", "asd"):
        res = m.generate(ids, max_new_tokens=40, strategy=strategy, eos_token_id=eos, threshold=0.0, budget=1.0)
        assert res.tokens == ar[:stop] and res.stats["stop_reason"] == "eos"
        for n in (1, 2, 7):
            assert m.generate(ids, max_new_tokens=n, strategy=strategy, threshold=0.0).tokens == ar[:n]


def test_gamma_carries_over_only_when_asked():
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(5, 25))
    first = m.generate(ids, max_new_tokens=30, strategy="asd", threshold=0.0, carry_gamma=True)
    carried = m.generate(ids, max_new_tokens=30, strategy="asd", threshold=0.0, carry_gamma=True)
    fresh = m.generate(ids, max_new_tokens=30, strategy="asd", threshold=0.0)
    assert carried.stats["initial_gamma"] == pytest.approx(first.stats["final_gamma"])
    assert fresh.stats["initial_gamma"] == 0.6


@pytest.mark.parametrize("strategy", ["asd", "dotf"])
@pytest.mark.parametrize("gamma", [0.2, 0.8])
def test_fixed_gamma_stays_put_and_is_lossless(strategy, gamma):
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(5, 25))
    ar = m.generate(ids, max_new_tokens=40)
    fixed = m.generate(ids, max_new_tokens=40, strategy=strategy, threshold=0.0, budget=1.0, gamma=gamma,
                       adaptive_gamma=False)
    assert fixed.tokens == ar.tokens
    assert fixed.stats["rounds"] > 1, "needs several rounds for adaptation to have had a chance"
    assert fixed.stats["initial_gamma"] == fixed.stats["final_gamma"] == gamma
    # The same call with adaptation on does move gamma, so the test above is not vacuous.
    adaptive = m.generate(ids, max_new_tokens=40, strategy=strategy, threshold=0.0, budget=1.0, gamma=gamma)
    assert adaptive.stats["final_gamma"] != gamma


def test_fixed_gamma_call_leaves_the_carried_gamma_alone():
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(5, 25))
    first = m.generate(ids, max_new_tokens=30, strategy="asd", threshold=0.0, carry_gamma=True)
    m.generate(ids, max_new_tokens=30, strategy="asd", threshold=0.0, gamma=0.3, adaptive_gamma=False)
    carried = m.generate(ids, max_new_tokens=30, strategy="asd", threshold=0.0, carry_gamma=True)
    assert carried.stats["initial_gamma"] == pytest.approx(first.stats["final_gamma"])
