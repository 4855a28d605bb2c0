"""Speculative statistics are consistent with each other, and streaming delivers every token."""
import pytest

import dotf
from conftest import make_tiny_hf


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
