"""The cost-aware draft length (cost_draft_length): greedy calls stay exact and report the caps they drafted
under; sampling calls ignore it (a cap chosen by the clock would make a seeded call unreproducible). The
policy's arithmetic is tested in tests/cpp/speculative/test_draft_length.cpp."""
import pytest

import dotf
from conftest import make_tiny_hf

IDS = list(range(60, 90))


@pytest.fixture(scope="module")
def tiny():
    return dotf.load(make_tiny_hf("llama-tied"))


@pytest.mark.parametrize("strategy", ["asd", "dotf"])
def test_greedy_stays_exact_and_reports_its_caps(tiny, strategy):
    ar = tiny.generate(IDS, max_new_tokens=60, strategy="ar").tokens
    kw = dict(strategy=strategy, max_new_tokens=60, max_draft=6, threshold=0.0, budget=1.0, break_even=False)
    capped = tiny.generate(IDS, cost_draft_length=True, **kw)
    fixed = tiny.generate(IDS, **kw)
    assert capped.tokens == ar and fixed.tokens == ar
    assert capped.stats["rounds"] > 0
    assert 1 <= capped.stats["mean_draft_cap"] <= 6
    # Without the option every round may draft max_draft; drafts never exceed the cap either way.
    assert fixed.stats["mean_draft_cap"] == 6
    assert capped.stats["drafted"] <= capped.stats["mean_draft_cap"] * capped.stats["rounds"] + 1e-9


def test_sampling_ignores_it(tiny):
    kw = dict(strategy="dotf", max_new_tokens=40, do_sample=True, temperature=0.8, seed=3, max_draft=6,
              break_even=False)
    assert tiny.generate(IDS, cost_draft_length=True, **kw).tokens == tiny.generate(IDS, **kw).tokens


def test_it_is_a_speculative_bool_option():
    option = dotf.options()["cost_draft_length"]
    assert option.type == "bool" and option.scope == "speculative"
    assert option.default("dotf", "cpu") is False
    with pytest.raises((TypeError, ValueError), match="cost_draft_length"):
        dotf.load(make_tiny_hf("llama-tied")).generate(IDS, max_new_tokens=4, strategy="dotf", cost_draft_length=2)
