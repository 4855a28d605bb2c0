"""on_tokens and on_prefill callbacks: an exception raised in one reaches the caller unchanged (after the
tokens delivered before it), a non-callable is refused, and the model stays usable; on_prefill reports each
layer of the prompt's pass, in order, before the first token."""
from __future__ import annotations

import pytest

from conftest import N_NEW, PROMPT, assert_usable


class Boom(Exception):
    pass


@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
@pytest.mark.parametrize("after", [1, 3])
def test_raising_callback_propagates_and_model_stays_usable(model, reference, strategy, after):
    err = Boom("stop here")
    calls = []

    def on_tokens(chunk):
        calls.append(list(chunk))
        if len(calls) == after:
            raise err

    with pytest.raises(Boom) as info:
        model.generate(PROMPT, max_new_tokens=N_NEW, strategy=strategy, threshold=0.0, on_tokens=on_tokens)
    assert info.value is err
    assert len(calls) == after
    assert [t for c in calls for t in c] == reference[strategy][: sum(map(len, calls))]
    assert_usable(model, reference)


def test_non_callable_callback(model, reference):
    with pytest.raises(TypeError, match="on_tokens must be callable, got int"):
        model.generate(PROMPT, max_new_tokens=4, on_tokens=3)
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_prefill_progress_reports_every_layer_before_the_first_token(model, reference, strategy):
    events = []
    res = model.generate(PROMPT, max_new_tokens=N_NEW, strategy=strategy, threshold=0.0,
                         on_prefill=lambda done, layers: events.append((done, layers)),
                         on_tokens=lambda chunk: events.append("tokens"))
    layers = model.num_layers
    assert events[:layers] == [(i, layers) for i in range(1, layers + 1)]
    assert set(events[layers:]) == {"tokens"}
    assert res.tokens == reference[strategy]


def test_raising_prefill_callback_abandons_the_call(model, reference):
    err = Boom("enough")

    def on_prefill(done, layers):
        if done == 1:
            raise err

    seen = []
    with pytest.raises(Boom) as info:
        model.generate(PROMPT, max_new_tokens=4, on_prefill=on_prefill, on_tokens=seen.append)
    assert info.value is err and seen == []
    with pytest.raises(TypeError, match="on_prefill must be callable, got str"):
        model.generate(PROMPT, max_new_tokens=4, on_prefill="bar")
    assert_usable(model, reference)
