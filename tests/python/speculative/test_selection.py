"""Draft plan selection: the paper's threshold rule (tau, keep_first, budget) and dotf's cost rule."""
import math

import pytest

import dotf
from dotf import _C
from conftest import make_tiny_hf


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


@pytest.mark.parametrize("draft", ["same", "int8"])
def test_cost_selection_skips_when_acceptance_is_free_and_stays_lossless(draft):
    # sensitivity 0 tells the cost model that skipping never costs acceptance: it must skip sublayers
    # (all measured costs are > 0), predict the measured base acceptance, and the output stays exact.
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(30, 50))
    ar = m.generate(ids, max_new_tokens=60, strategy="ar")
    res = m.generate(ids, max_new_tokens=60, strategy="dotf", draft=draft, lookup=False, break_even=False,
                     selection="cost", sensitivity=0.0, cost_warmup_rounds=1)
    s = res.stats
    assert res.tokens == ar.tokens
    assert s.get("cost_selections", 0) >= 1, s
    assert s["skipped_attention_layers"] or s["skipped_mlp_layers"], s
    assert 0.0 <= s["predicted_acceptance"] <= 1.0 and s["predicted_gain"] > 1.0, s
    # A huge sensitivity makes every skip cost all acceptance. Then a skip can only be chosen when a round of
    # bonus tokens alone is predicted faster, which needs a verify pass timed cheaper than a draft step (timer
    # noise on a loaded machine can make it so for this tiny model, where both are microseconds of overhead;
    # the rule itself is unit-tested with fixed costs in tests/cpp/speculative/test_selection.cpp). So: either
    # nothing is skipped and the gain is 1, or the chosen plan predicts no acceptance at all.
    res = m.generate(ids, max_new_tokens=60, strategy="dotf", draft=draft, lookup=False, break_even=False,
                     selection="cost", sensitivity=1e6, cost_warmup_rounds=1)
    s = res.stats
    assert res.tokens == ar.tokens
    if s["skipped_attention_layers"] or s["skipped_mlp_layers"]:
        assert s["predicted_acceptance"] < 1e-6 and s["predicted_gain"] > 1.0, s
    else:
        assert s["predicted_gain"] == 1.0, s
