"""State and concurrency: concurrent generate calls on one model, the GIL released during compute,
and Ctrl-C (KeyboardInterrupt) stopping a long generation promptly with the model left usable."""
from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest
import torch

import dotf
from conftest import make_tiny_hf

PROMPT = list(range(40, 60))


@pytest.fixture(scope="module")
def model():
    return dotf.load(make_tiny_hf("llama-gqa"))


@pytest.fixture(scope="module")
def long_model():
    """A tiny model with a long context, for generations that take seconds."""
    hf = make_tiny_hf("llama-gqa")
    hf.config.max_position_embeddings = 16384
    return dotf.load(hf)


def _run_threads(fns):
    results, errors = [None] * len(fns), []
    start = threading.Barrier(len(fns))

    def worker(i, fn):
        try:
            start.wait()
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a generate call hung"
    if errors:
        raise errors[0]
    return results


def test_two_threads_one_model_get_the_single_threaded_results(model):
    n = 300
    spans = {}

    def call(strategy, **kw):
        def fn():
            t0 = time.perf_counter()
            res = model.generate(PROMPT, max_new_tokens=n, strategy=strategy, **kw)
            spans[strategy] = (t0, time.perf_counter())
            return res.tokens
        return fn

    ar_alone = model.generate(PROMPT, max_new_tokens=n, strategy="ar").tokens
    asd_alone = model.generate(PROMPT, max_new_tokens=n, strategy="asd", threshold=0.0, max_draft=4).tokens
    dotf_alone = model.generate(PROMPT, max_new_tokens=n, strategy="dotf", threshold=0.0).tokens
    assert asd_alone == ar_alone == dotf_alone
    for _ in range(2):
        ar, asd, dtf = _run_threads([call("ar"), call("asd", threshold=0.0, max_draft=4),
                                     call("dotf", threshold=0.0)])
        assert ar == ar_alone and asd == ar_alone and dtf == ar_alone
    # The calls really overlapped in time (else this test proves nothing).
    (a0, a1), (b0, b1) = spans["ar"], spans["asd"]
    assert max(a0, b0) < min(a1, b1), "the generate calls did not overlap"


def test_concurrent_calls_with_streaming_and_release_draft(model):
    """Callbacks from several threads, and release_draft() racing int8-draft calls."""
    ref = model.generate(PROMPT, max_new_tokens=60, strategy="ar").tokens
    chunks = {i: [] for i in range(3)}

    def call(i):
        def fn():
            return model.generate(PROMPT, max_new_tokens=60, strategy="dotf", on_tokens=chunks[i].extend).tokens
        return fn

    def releaser():
        for _ in range(20):
            model.release_draft()
            time.sleep(0.005)

    out = _run_threads([call(0), call(1), call(2), releaser])
    for i in range(3):
        assert out[i] == ref and chunks[i] == ref


def test_gil_is_released_during_compute(long_model):
    count = 0
    stop = threading.Event()

    def counter():
        nonlocal count
        while not stop.is_set():
            count += 1

    # Baseline: how far the counter gets in a pure-Python-idle interval of the same length.
    t = threading.Thread(target=counter)
    t0 = time.perf_counter()
    t.start()
    time.sleep(0.5)
    stop.set()
    t.join()
    idle_rate = count / (time.perf_counter() - t0)

    count = 0
    stop.clear()
    t = threading.Thread(target=counter)
    t.start()
    t0 = time.perf_counter()
    long_model.generate(PROMPT, max_new_tokens=2000)  # no on_tokens: pure C++ between rounds
    elapsed = time.perf_counter() - t0
    stop.set()
    t.join()
    busy_rate = count / elapsed
    # Were the GIL held through the call, the counter would only run at the 5 ms switch interval
    # boundaries of a thread that never releases it: essentially zero progress.
    assert elapsed > 0.2, "generation too short to measure"
    assert busy_rate > 0.1 * idle_rate, (busy_rate, idle_rate)


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """A shell starts background jobs with SIGINT ignored, and Python then installs no handler of its
    own: _thread.interrupt_main() would do nothing. Install Python's for these tests, restore after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_after(seconds):
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


@pytest.mark.parametrize("strategy,kw", [("ar", {}), ("asd", dict(threshold=0.0)),
                                         ("dotf", dict(threshold=0.0))])
@pytest.mark.parametrize("streaming", [False, True])
def test_keyboard_interrupt_stops_promptly_and_model_stays_usable(long_model, strategy, kw, streaming):
    ref = long_model.generate(PROMPT, max_new_tokens=20, strategy="ar").tokens
    seen = []
    timer = _interrupt_after(0.3)
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            long_model.generate(PROMPT, max_new_tokens=16000, strategy=strategy,
                                on_tokens=seen.extend if streaming else None, **kw)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    # 16k tokens take tens of seconds; the interrupt lands within a round (a few ms), allow for load.
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    if streaming:
        assert 0 < len(seen) < 16000 and seen[:20] == ref[: len(seen[:20])]
    assert long_model.generate(PROMPT, max_new_tokens=20).tokens == ref
    assert long_model.generate(PROMPT, max_new_tokens=20, strategy=strategy, **kw).tokens == ref


def test_keyboard_interrupt_with_a_user_cache_leaves_it_reusable(long_model):
    ref = long_model.generate(PROMPT, max_new_tokens=20, strategy="ar").tokens
    cache = long_model.new_cache(16384)
    timer = _interrupt_after(0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            long_model.generate(PROMPT, max_new_tokens=16000, strategy="asd", threshold=0.0, cache=cache)
    finally:
        timer.cancel()
    assert 0 < cache.length < 16384
    # generate() restarts from position 0 over whatever the cache held.
    assert long_model.generate(PROMPT, max_new_tokens=20, cache=cache).tokens == ref
