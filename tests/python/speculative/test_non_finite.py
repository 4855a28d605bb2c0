"""Non-finite logits: every strategy raises (at the step that meets them, after delivering the tokens
before it), and a non-finite draft the full model rejects does not fail speculative decoding."""
from __future__ import annotations

import pytest
import torch

import dotf
from conftest import N_NEW, PROMPT, make_tiny_hf


@pytest.mark.parametrize("where", ["embedding", "lm_head", "mlp"])
@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_non_finite_logits_raise(where, strategy):
    hf = make_tiny_hf("llama-gqa")
    with torch.no_grad():
        if where == "embedding":
            hf.model.embed_tokens.weight.fill_(float("nan"))
        elif where == "lm_head":
            hf.lm_head.weight[7].fill_(float("inf"))
        else:
            hf.model.layers[2].mlp.down_proj.weight.fill_(float("inf"))
    m = dotf.load(hf)
    with pytest.raises(RuntimeError, match="non-finite logits"):
        m.generate(PROMPT, max_new_tokens=8, strategy=strategy, threshold=0.0)
    # ...and again: the error is not a one-off state.
    with pytest.raises(RuntimeError, match="non-finite logits"):
        m.generate(PROMPT, max_new_tokens=8, strategy=strategy, threshold=0.0)


def test_non_finite_logits_raise_mid_generation(hf_model, reference):
    """A token whose embedding is NaN breaks the model only once it is fed: AR raises at that step
    (not before: the tokens up to it are delivered) rather than choosing token 0."""
    ar = reference["ar"]
    i = next(i for i, t in enumerate(ar) if t not in PROMPT and t not in ar[:i])
    bad = ar[i]
    hf = make_tiny_hf("llama-gqa")
    with torch.no_grad():
        hf.model.embed_tokens.weight[bad] = float("nan")
    m = dotf.load(hf)
    for strategy in ("ar", "asd"):
        seen = []
        with pytest.raises(RuntimeError, match="non-finite logits"):
            m.generate(PROMPT, max_new_tokens=N_NEW, strategy=strategy, threshold=0.0, on_tokens=seen.extend)
        assert seen == ar[: len(seen)] and len(seen) <= i + 1
        if strategy == "ar":
            assert seen == ar[: i + 1]  # every token up to the one that cannot be fed


@pytest.mark.parametrize("max_draft", [1, 3])
def test_non_finite_rejected_draft_keeps_speculation_lossless(max_draft):
    """A draft token the model cannot process (NaN embedding) that the full model rejects must not fail
    the call: plain decoding never feeds that token, so speculative decoding must finish as it does.
    (Both the acceptance rule and CPU attention once let such a row poison the verify pass.)"""
    hf = make_tiny_hf("llama-gqa", dtype=torch.float64)
    m = dotf.load(hf, dtype=torch.float64)
    skip_all = [False] * m.num_layers  # draft = embedding -> final norm -> lm_head: often wrong
    for offset in range(0, 256, 9):
        prompt = [(offset + i) % 256 for i in range(20)]
        ar = m.generate(prompt, max_new_tokens=24, strategy="ar").tokens
        # The first round always drafts from ar[0]; what does this draft propose there?
        cache = m.new_cache(64)
        m.forward(prompt, 0, cache, logits="none")
        logits, _, _ = m.forward([ar[0]], len(prompt), cache, attention=skip_all, mlp=skip_all)
        x = int(logits[0].argmax())
        if x != ar[1] and x not in prompt and x not in ar:
            break
    else:
        pytest.skip("no prompt found whose first draft is rejected and unused")
    with torch.no_grad():
        hf.model.embed_tokens.weight[x] = float("nan")
    poisoned = dotf.load(hf, dtype=torch.float64)
    assert poisoned.generate(prompt, max_new_tokens=24).tokens == ar
    res = poisoned.generate(prompt, max_new_tokens=24, strategy="asd", max_draft=max_draft,
                            draft_attention=skip_all, draft_mlp=skip_all)
    assert res.tokens == ar
    assert res.stats["drafted"] > res.stats["accepted"]
