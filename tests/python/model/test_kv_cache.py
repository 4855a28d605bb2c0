"""KV cache: O(1) truncate and append invariants."""
import pytest
import torch

import dotf
from conftest import make_tiny_hf


@pytest.fixture(scope="module")
def model():
    return dotf.load(make_tiny_hf("llama-gqa", dtype=torch.float64), dtype=torch.float64)


def test_truncate_then_reappend_gives_identical_logits(model):
    prompt, cont, other = list(range(1, 21)), [40, 41, 42], [90, 91, 92, 93, 94]
    cache = model.new_cache(64)
    model.forward(prompt, 0, cache, logits="none")
    first, _, _ = model.forward(cont, 20, cache)
    assert cache.length == 23
    cache.truncate(20)
    model.forward(other, 20, cache)  # overwrite the rows with something else
    cache.truncate(20)
    again, _, _ = model.forward(cont, 20, cache)
    assert torch.equal(first, again)
    # ...and equal (to rounding) to never having split the sequence at all.
    whole = model.forward_logits(prompt + cont)[20:]
    torch.testing.assert_close(first, whole, rtol=1e-10, atol=1e-10)


def test_truncate_moves_length_without_copying(model):
    cache = model.new_cache(32)
    model.forward(list(range(1, 11)), 0, cache, logits="none")
    keys = cache.keys(0)
    before = keys[:10].clone()
    ptr = keys.data_ptr()
    cache.truncate(4)
    assert cache.length == 4 and cache.keys(0).data_ptr() == ptr
    assert torch.equal(cache.keys(0)[:10], before)  # nothing was cleared or moved


def test_truncate_and_append_bounds(model):
    cache = model.new_cache(8)
    with pytest.raises(ValueError, match="truncate"):
        cache.truncate(1)
    cache.append(8)
    with pytest.raises(ValueError, match="capacity"):
        cache.append(1)
    with pytest.raises(ValueError, match="start position"):
        model.forward([1], 9, cache)
