"""Bad arguments to generate(), forward() and the KV cache (input_ids, max_new_tokens, lengths past
max_seq_len or the cache capacity, strategy, eos_token_id) get a clear Python exception before any work
is done, and the model stays usable."""
from __future__ import annotations

import pytest
import torch

import dotf

from conftest import PROMPT, assert_usable


@pytest.mark.parametrize("ids,exc,match", [
    ([], ValueError, "input_ids must not be empty"),
    (torch.zeros(0, dtype=torch.long), ValueError, "input_ids must not be empty"),
    ([5, -1], ValueError, r"token id -1, outside the vocabulary \[0, 256\)"),
    ([5, 256], ValueError, r"token id 256, outside the vocabulary \[0, 256\)"),
    (torch.tensor([[1, 2, 3]]), ValueError, r"input_ids must be 1-D, got shape \(1, 3\)"),
    (torch.tensor(7), ValueError, "input_ids must be 1-D"),
    (torch.tensor([1.0, 2.0]), TypeError, "input_ids must hold integers, got dtype torch.float32"),
    (torch.tensor([True, False]), TypeError, "input_ids must hold integers"),
    (["a", "b"], TypeError, r"input_ids\[0\] must be an int, got str"),
    ([1, 2.0], TypeError, r"input_ids\[1\] must be an int, got float"),
    ([[1, 2]], TypeError, r"input_ids\[0\] must be an int, got list"),
    (None, TypeError, "input_ids must be a list of ints or a 1-D integer tensor, got NoneType"),
    ("hello", TypeError, "got str"),
])
def test_bad_input_ids(model, reference, ids, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(ids, max_new_tokens=4)
    with pytest.raises(exc, match=match):
        model.forward_logits(ids)
    assert_usable(model, reference)


@pytest.mark.parametrize("n,exc,match", [
    (0, ValueError, "max_new_tokens must be >= 1, got 0"),
    (-3, ValueError, "max_new_tokens must be >= 1, got -3"),
    (1.5, TypeError, "max_new_tokens must be an int, got float"),
    (True, TypeError, "max_new_tokens must be an int, got bool"),
    ("8", TypeError, "max_new_tokens must be an int, got str"),
])
def test_bad_max_new_tokens(model, reference, n, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(PROMPT, max_new_tokens=n)
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_beyond_max_seq_len_fails_up_front(model, reference, strategy):
    seen = []
    with pytest.raises(ValueError, match=r"prompt \(20 tokens\) \+ max_new_tokens \(493\) exceeds max_seq_len=512"):
        model.generate(PROMPT, max_new_tokens=493, strategy=strategy, on_tokens=seen.append)
    assert seen == [], "no work may be done before the error"
    if strategy == "ar":  # exactly at the limit is fine (the same bound holds for every strategy)
        assert len(model.generate(PROMPT, max_new_tokens=492).tokens) == 492
    assert_usable(model, reference)


def test_max_seq_len_error_says_what_the_cache_takes(model):
    mib = model.kv_cache_bytes(512) // 2**20
    with pytest.raises(ValueError, match=rf"a KV cache of 512 positions takes {mib} MiB in Float"):
        model.generate(PROMPT, max_new_tokens=493, strategy="ar")


def test_kv_cache_bytes_is_what_a_cache_allocates(model):
    cache = model.new_cache(100)
    assert model.kv_cache_bytes(100) == cache.nbytes
    cache.add_int8_mirror()
    assert model.kv_cache_bytes(100, draft_kv="int8") == cache.nbytes + cache.int8_mirror_nbytes
    with pytest.raises(ValueError, match="draft_kv must be 'same' or 'int8'"):
        model.kv_cache_bytes(10, draft_kv="fp8")
    with pytest.raises(ValueError, match="positions must be >= 0"):
        model.kv_cache_bytes(-1)


def test_a_cache_larger_than_free_memory_is_refused_up_front(model, reference):
    testing = dotf._C.testing
    assert testing.available_memory_bytes() > 0  # MemAvailable of this (Linux) machine
    need = model.kv_cache_bytes(20 + 30)
    seen = []
    try:
        testing.set_available_memory_bytes(need - 1)
        with pytest.raises(MemoryError, match=r"prompt \(20 tokens\) \+ max_new_tokens \(30\) takes .* MiB of memory available"):
            model.generate(PROMPT, max_new_tokens=30, strategy="ar", on_tokens=seen.append)
        assert seen == []
        # The int8 mirror counts where the call adds one, and only there ("ar" never drafts).
        testing.set_available_memory_bytes(need)
        assert len(model.generate(PROMPT, max_new_tokens=30, strategy="ar", draft_kv="int8").tokens) == 30
        with pytest.raises(MemoryError, match="with the int8 mirror"):
            model.generate(PROMPT, max_new_tokens=30, strategy="dotf", draft_kv="int8")
        # A cache the caller allocated is already there: nothing new to check.
        assert len(model.generate(PROMPT, max_new_tokens=10, strategy="ar", cache=model.new_cache(40)).tokens) == 10
    finally:
        testing.set_available_memory_bytes(-1)
    assert_usable(model, reference)


def test_user_cache_too_small(model, reference):
    with pytest.raises(ValueError, match="exceed the cache capacity 25"):
        model.generate(PROMPT, max_new_tokens=10, cache=model.new_cache(25))
    with pytest.raises(ValueError, match=r"cache capacity must be in \[1, max_seq_len=512\], got 0"):
        model.new_cache(0)
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["foo", "ASD", None, 1])
def test_unknown_strategy(model, reference, strategy):
    with pytest.raises(ValueError, match="strategy must be one of 'ar', 'asd', 'dotf'"):
        model.generate(PROMPT, max_new_tokens=4, strategy=strategy)
    assert_usable(model, reference)


@pytest.mark.parametrize("eos,exc,match", [
    (256, ValueError, r"eos_token_id 256 is outside the vocabulary \[0, 256\)"),
    (-1, ValueError, r"eos_token_id -1 is outside the vocabulary"),
    ([3, 1000], ValueError, "eos_token_id 1000 is outside"),
    ("</s>", TypeError, "eos_token_id must be an int, got str"),
])
def test_bad_eos_token_id(model, reference, eos, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(PROMPT, max_new_tokens=4, eos_token_id=eos)
    assert_usable(model, reference)


def test_low_level_forward_bad_arguments(model, reference):
    cache = model.new_cache(64)
    with pytest.raises(ValueError, match=r"start position 5 must be in \[0, cache length 0\]"):
        model.forward(PROMPT, 5, cache)
    with pytest.raises(ValueError, match="logits must be one of 'all', 'last', 'none', got 'first'"):
        model.forward(PROMPT, 0, cache, logits="first")
    with pytest.raises(ValueError, match=r"exceed the cache capacity 64"):
        model.forward(list(range(70)), 0, cache)
    with pytest.raises(ValueError, match=r"KVCache.truncate: length must be in \[0, 0\], got 3"):
        cache.truncate(3)
    assert_usable(model, reference)
