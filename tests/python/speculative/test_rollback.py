"""Rollback: after speculation (drafts written, some rejected, the cache truncated) the accepted KV rows
equal those of plain decoding, with the draft reading the exact rows or their int8 mirror."""
import pytest
import torch

import dotf
from conftest import make_tiny_hf


@pytest.mark.parametrize("draft_kv", ["same", "int8"])
def test_cache_after_speculation_equals_plain_decoding(draft_kv):
    m = dotf.load(make_tiny_hf("qwen2-bias", dtype=torch.float64), dtype=torch.float64)
    ids = list(range(20, 40))
    caches = {}
    for strategy in ("ar", "asd"):
        cache = m.new_cache(len(ids) + 50)
        res = m.generate(ids, max_new_tokens=50, strategy=strategy, threshold=0.0, budget=1.0, max_draft=5,
                         cache=cache, **({} if strategy == "ar" else {"draft_kv": draft_kv}))
        caches[strategy] = (cache, res)
    (ar_cache, ar), (asd_cache, asd) = caches["ar"], caches["asd"]
    assert asd.tokens == ar.tokens
    assert asd.stats["rounds"] > 0 and asd.stats["accepted"] < asd.stats["drafted"], "needs rejections to test"
    rows = len(ids) + len(ar.tokens) - 1  # every token but the last has been fed to the model
    assert ar_cache.length == rows and asd_cache.length >= rows
    for layer in range(m.num_layers):
        for a, b in ((ar_cache.keys(layer), asd_cache.keys(layer)), (ar_cache.values(layer), asd_cache.values(layer))):
            torch.testing.assert_close(a[:rows], b[:rows], rtol=1e-10, atol=1e-12)
