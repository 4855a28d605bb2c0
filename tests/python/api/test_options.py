"""generate()'s speculative options: each one out of range or of the wrong type, unknown options, and
inconsistent combinations get a clear Python exception naming the option and its range, for every
strategy; the model stays usable."""
from __future__ import annotations

import pytest

import dotf
from conftest import PROMPT, assert_usable


@pytest.mark.parametrize("option,value,exc,match", [
    ("threshold", 1.5, ValueError, r"threshold must be in \[-1, 1\], got 1.5"),
    ("threshold", -1.01, ValueError, r"threshold must be in \[-1, 1\]"),
    ("threshold", float("nan"), ValueError, r"threshold must be in \[-1, 1\], got nan"),
    ("threshold", "0.9", TypeError, "threshold must be a number, got str"),
    ("gamma", 0.0, ValueError, r"gamma must be in \(0, 1\), got 0"),
    ("gamma", 1.0, ValueError, r"gamma must be in \(0, 1\), got 1"),
    ("margin", -0.5, ValueError, "margin must be a finite number >= 0, got -0.5"),
    ("margin", float("inf"), ValueError, "margin must be a finite number >= 0, got inf"),
    ("margin", "0.1", TypeError, "margin must be a number, got str"),
    ("draft_exit", "entropy", ValueError, "draft_exit must be 'probability' or 'margin', got 'entropy'"),
    ("draft_exit", 1, TypeError, "draft_exit must be a str, got int"),
    ("alpha", 0.0, ValueError, r"alpha must be in \(0, 1\], got 0"),
    ("alpha", 1.2, ValueError, r"alpha must be in \(0, 1\]"),
    ("max_draft", 0, ValueError, "max_draft must be >= 1, got 0"),
    ("max_draft", 2.5, TypeError, "max_draft must be an int, got float"),
    ("budget", -0.1, ValueError, r"budget must be in \[0, 1\], got -0.1"),
    ("budget", 1.5, ValueError, r"budget must be in \[0, 1\]"),
    ("keep_first", -1, ValueError, "keep_first must be >= 0"),
    ("reselect_every", -2, ValueError, "reselect_every must be >= 0"),
    ("lookup_min_ngram", 0, ValueError, "min_ngram"),
    ("lookup_max_tokens", 0, ValueError, "lookup_max_tokens must be >= 1, got 0"),
    ("lookup_every_step", 1, TypeError, "lookup_every_step must be a bool, got int"),
    ("lookup", 1, TypeError, "lookup must be a bool, got int"),
    ("adaptive_gamma", 0, TypeError, "adaptive_gamma must be a bool, got int"),
    ("adaptive_gamma", "no", TypeError, "adaptive_gamma must be a bool, got str"),
    ("draft", "fp4", ValueError, "draft must be 'same' or 'int8', got 'fp4'"),
    ("draft_kv", "int4", ValueError, "draft_kv must be one of 'same', 'int8', 'auto', got 'int4'"),
    ("similarity", "max", ValueError, "similarity must be 'mean' or 'last'"),
    ("selection", "best", ValueError, "selection must be 'threshold' or 'cost', got 'best'"),
    ("sensitivity", -1.0, ValueError, "sensitivity must be >= 0, got -1"),
    ("sensitivity", float("nan"), ValueError, "sensitivity must be >= 0, got nan"),
    ("cost_warmup_rounds", 0, ValueError, "cost_warmup_rounds must be >= 1, got 0"),
    ("temprature", 0.7, TypeError, "unknown option.*temprature.*known: threshold"),  # misspelt
])
@pytest.mark.parametrize("strategy", ["asd", "dotf"])
def test_options_out_of_range(model, reference, strategy, option, value, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(PROMPT, max_new_tokens=4, strategy=strategy, **{option: value})
    assert_usable(model, reference)


@pytest.mark.parametrize("draft_exit,option,value,match", [
    ("margin", "gamma", 1.5, r"gamma must be in \(0, 1\), got 1.5"),
    ("probability", "margin", -1.0, "margin must be a finite number >= 0, got -1"),
])
def test_inactive_exit_threshold_is_still_checked(model, reference, draft_exit, option, value, match):
    # Both thresholds are options of every call: the one the chosen exit ignores is range-checked too.
    with pytest.raises(ValueError, match=match):
        model.generate(PROMPT, max_new_tokens=4, strategy="dotf", draft_exit=draft_exit, **{option: value})
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["asd", "dotf"])
def test_fixed_gamma_cannot_be_carried(model, reference, strategy):
    with pytest.raises(ValueError, match="carry_gamma=True needs adaptive_gamma=True"):
        model.generate(PROMPT, max_new_tokens=4, strategy=strategy, adaptive_gamma=False, carry_gamma=True)
    assert_usable(model, reference)


def test_unknown_option_with_ar_is_refused(model, reference):
    with pytest.raises(TypeError, match="unknown option.*temprature"):
        model.generate(PROMPT, max_new_tokens=4, strategy="ar", temprature=0.7)
    assert_usable(model, reference)


def test_bad_draft_plan(model, reference):
    with pytest.raises(ValueError, match=r"draft_attention must have one entry per layer \(4\), got 2"):
        model.generate(PROMPT, max_new_tokens=4, strategy="asd", draft_attention=[True, False])
    assert_usable(model, reference)


def test_options_come_from_one_definition():
    table = dotf.options()
    assert list(table)[0] == "threshold" and {"gamma", "max_draft", "do_sample", "temperature"} <= set(table)
    assert table["gamma"].default("asd") == 0.6 and table["gamma"].default("dotf") == 0.2
    assert table["draft"].default("dotf", "cpu") == "int8" and table["draft"].default("dotf", "cuda") == "same"
    assert table["draft"].choices == ("same", "int8") and table["max_draft"].range == ">= 1"
    assert table["draft_kv"].default("dotf", "cpu") == "auto" and table["draft_kv"].default("dotf", "cuda") == "same"
    assert table["draft_kv"].default("asd", "cpu") == "same" and table["draft_kv"].choices == ("same", "int8", "auto")
    assert table["temperature"].scope == "sampling" and table["lookup"].scope == "speculative"
    assert dotf.defaults("dotf")["max_draft"] == 8 and dotf.defaults("asd", "cuda")["threshold"] == 0.99
    assert dotf.STRATEGIES == ("ar", "asd", "dotf")
    with pytest.raises(ValueError, match="strategy must be one of"):
        dotf.defaults("fast")


def test_every_default_is_what_a_call_uses(model):
    """A call that names no option runs on the table's defaults: the stats echo the exit threshold and K_max."""
    for strategy in ("asd", "dotf"):
        d = dotf.defaults(strategy)
        s = model.generate(PROMPT, max_new_tokens=4, strategy=strategy).stats
        assert s["initial_gamma"] == d["gamma"] and len(s["drafted_at"]) == d["max_draft"]
