"""Lossless at long contexts, in float64: real prompts of 2,048-2,304 tokens (bench/prompts.py long_prompt: ACLSum
papers to summarize, a file of HumanEval solutions plus a request, a long ShareGPT conversation), each
decoded by `ar` and by one speculative configuration that reads the long context differently (the int8 KV
mirror, chosen by dotf's draft_kv="auto" or asked for, an attention window, the paper's skipping). The tokens must be equal, one for one.

About 100 s per prompt on two cores (two float64 prefills of ~2k tokens).
"""
import pytest
import torch

from conftest import smollm2_dotf

# (kind, prompt tokens, strategy, options, the KV rows the draft reads: draft_kv and draft_window as run)
CASES = [
    # dotf's defaults: draft_kv="auto" picks the mirror here (the float64 rows of 2k positions are 191 MB
    # against a 135 MB int8 draft) but no window (the mirror's rows are 25 MB)
    ("summarize", 2048, "dotf", {}, ("int8", 0)),
    ("code", 2048, "dotf", {"draft_kv": "same"}, ("same", 0)),
    ("chat", 2048, "dotf", {"draft_kv": "int8", "draft_window": 256}, ("int8", 256)),
    ("summarize", 2304, "asd", {"draft_window": 512}, ("same", 512)),
    ("code", 2176, "asd", {"threshold": 0.98}, ("same", 0)),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,length,strategy,options,draft_reads", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_long_prompts_float64(kind, length, strategy, options, draft_reads):
    import prompts
    prompts.ensure_installed()
    m = smollm2_dotf(torch.float64)
    ids = prompts.long_prompt(m.tokenizer, kind, length)
    assert len(ids) == length
    ar = m.generate(ids, max_new_tokens=32, strategy="ar")
    res = m.generate(ids, max_new_tokens=32, strategy=strategy, **options)
    assert res.tokens == ar.tokens
    assert res.stats["drafted"] > 0, "the draft must actually have been used"
    assert (res.stats["draft_kv"], res.stats["draft_window"]) == draft_reads
