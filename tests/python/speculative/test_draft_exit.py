"""The adaptive draft exit: the paper's gamma rule (hand-computed, fixed, carried between calls, kept in
range when carried) and dotf's logit-margin exit."""
import pytest

import dotf
from dotf import _C
from conftest import N_NEW, PROMPT, assert_usable, make_tiny_hf


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
    ar = m.generate(ids, max_new_tokens=40, strategy="ar")
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


def test_carried_gamma_stays_valid_after_it_drifts_out_of_range(model, reference):
    """Low acceptance pushes the adaptive gamma up by 0.001 a round without bound; carrying it into the
    next call must not make that call fail validation for a value the caller never passed."""
    skip_all = [False] * model.num_layers  # a poor draft: most drafts are rejected
    kw = dict(strategy="asd", alpha=1.0, draft_attention=skip_all, draft_mlp=skip_all)
    first = model.generate(PROMPT, max_new_tokens=150, gamma=0.98, **kw)
    assert first.stats["final_gamma"] > 1.0, first.stats["final_gamma"]
    second = model.generate(PROMPT, max_new_tokens=N_NEW, carry_gamma=True, **kw)
    assert second.tokens == reference["ar"]
    assert 0.0 < second.stats["initial_gamma"] < 1.0
    assert_usable(model, reference)


@pytest.mark.parametrize("draft", ["same", "int8"])
def test_margin_exit_is_lossless_and_thresholds_the_logit_margin(draft):
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(30, 50))
    ar = m.generate(ids, max_new_tokens=60, strategy="ar")
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
    # Both strategies default to the paper's probability exit (bench/README.md, "Choosing the defaults":
    # the margin rule measured no faster).
    for strategy in ("asd", "dotf"):
        assert m.generate(ids, max_new_tokens=8, strategy=strategy).stats["draft_exit"] == "probability"
