"""The LM-head screen (option lm_head_screen; csrc/ops/linear_screen.h) changes no token: greedy decoding
and sampling with top_k give the same tokens with the screen on and off, for every strategy, on tiny models
of every architecture and on real prompts of the real model; the screened logits are the full head's where
they are not -inf; the int8 bound holds on real weights and real hidden states."""
from __future__ import annotations

import pytest
import torch

import dotf
from dotf import _C
from conftest import make_tiny_hf, real_prompts, smollm2_dotf, smollm2_hf

IDS = torch.randint(0, 256, (24,), generator=torch.Generator().manual_seed(5)).tolist()
STRATEGIES = {
    "ar": dict(strategy="ar"),
    "asd": dict(strategy="asd", threshold=0.0, budget=1.0),
    "dotf": dict(strategy="dotf", lookup_min_ngram=1),
}


def has_screen(model) -> bool:
    """Whether the head runs on the AVX2 path, which the screen needs (without building the screen)."""
    return model._impl.linear_path == "avx2"


@pytest.fixture(scope="module", params=["llama-gqa", "llama-tied", "mistral", "qwen2-bias"])
def tiny(request):
    m = dotf.load(make_tiny_hf(request.param))
    if not has_screen(m):
        pytest.skip("this CPU runs no AVX2 head, which the screen needs")
    return m


def test_screened_logits_are_the_heads_where_kept(tiny):
    full = [True] * tiny.num_layers
    for rows, logits in ((1, "last"), (9, "all")):
        c1, c2 = tiny.new_cache(64), tiny.new_cache(64)
        tiny.forward(IDS, 0, c1, logits="none")
        tiny.forward(IDS, 0, c2, logits="none")
        step = IDS[:rows]
        ref, _, _ = tiny.forward(step, len(IDS), c1, full, full, logits=logits)
        for k in (1, 3, 50):
            got, _, _ = tiny.forward(step, len(IDS), c2, full, full, logits=logits, logits_top_k=k)
            kept = got != float("-inf")
            assert torch.equal(got[kept], ref[kept])
            kth = ref.topk(k, dim=-1).values[:, -1:]
            assert kept[ref >= kth].all(), "a logit among the k largest was left out"
            if k == 1:
                assert (~kept).sum() >= ref.numel() // 2, "the screen should leave most of the vocabulary out"
                assert torch.equal(got.argmax(-1), ref.argmax(-1))
    assert tiny.lm_head_screen_bytes > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_greedy_tokens_unchanged(tiny_arch, strategy):
    m = dotf.load(make_tiny_hf(tiny_arch))
    kw = STRATEGIES[strategy]
    on = m.generate(IDS, max_new_tokens=48, **kw)
    off = m.generate(IDS, max_new_tokens=48, lm_head_screen=False, **kw)
    assert on.tokens == off.tokens
    assert on.tokens == m.generate(IDS, max_new_tokens=48, strategy="ar", lm_head_screen=False).tokens


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("warp", [dict(top_k=1), dict(top_k=5, temperature=0.7, top_p=0.9), dict(top_k=50),
                                  dict(top_k=0, top_p=0.8)], ids=["k1", "k5_t_p", "k50", "k0_p"])
def test_sampled_tokens_unchanged(tiny, strategy, warp):
    kw = STRATEGIES[strategy]
    for seed in range(4):
        on = tiny.generate(IDS, max_new_tokens=24, do_sample=True, seed=seed, **warp, **kw)
        off = tiny.generate(IDS, max_new_tokens=24, do_sample=True, seed=seed, lm_head_screen=False, **warp, **kw)
        assert on.tokens == off.tokens, seed


def test_bf16_greedy_tokens_unchanged():
    m = dotf.load(make_tiny_hf("llama-gqa"), dtype=torch.bfloat16)
    if not has_screen(m):
        pytest.skip("this CPU runs no AVX2 head, which the screen needs")
    for strategy, kw in STRATEGIES.items():
        on = m.generate(IDS, max_new_tokens=32, **kw)
        assert on.tokens == m.generate(IDS, max_new_tokens=32, lm_head_screen=False, **kw).tokens, strategy


def test_heads_without_a_screen():
    """float64 heads run on ATen (MKL), which promises no per-column invariance: no screen, every logit."""
    m = dotf.load(make_tiny_hf("llama-gqa", dtype=torch.float64), dtype=torch.float64)
    assert _C.testing.lm_head_screen(m._impl) is None
    cache = m.new_cache(32)
    logits, _, _ = m.forward(IDS, 0, cache, logits="last", logits_top_k=1)
    assert torch.isfinite(logits).all()
    assert m.generate(IDS, max_new_tokens=8).tokens == m.generate(IDS, max_new_tokens=8, lm_head_screen=False).tokens
    assert m.lm_head_screen_bytes == 0


def test_screen_memory_is_built_at_first_use_and_released():
    m = dotf.load(make_tiny_hf("llama-gqa"))
    if not has_screen(m):
        pytest.skip("this CPU runs no AVX2 head, which the screen needs")
    m.generate(IDS, max_new_tokens=4, strategy="ar", do_sample=True, top_k=0, seed=0)
    assert m.lm_head_screen_bytes == 0  # every logit is read: no screen built
    m.generate(IDS, max_new_tokens=4, strategy="dotf")
    # int8 panels of the [256, 64] head and a float scale per row, four floats per row of bound terms; the
    # int8 draft's head is the same int8 copy (tests/cpp/speculative/test_engine.cpp).
    assert m.lm_head_screen_bytes == 256 * 64 + 256 * 4 + 256 * 16
    assert m.draft_bytes > 0
    m.release_draft()
    assert m.lm_head_screen_bytes == 0 and m.draft_bytes == 0


# ---- the real SmolLM2-135M -----------------------------------------------------------------------------------
def _bound_check(model, hf, prompts):
    screen = _C.testing.lm_head_screen(model._impl)
    if screen is None:
        pytest.skip("this CPU runs no AVX2 head, which the screen needs")
    rows, worst = 0, 0.0
    for _, ids in prompts:
        new = model.generate(ids, max_new_tokens=32, strategy="ar").tokens
        with torch.no_grad():
            x = hf.model(torch.tensor([list(ids) + new])).last_hidden_state[0, -33:]  # positions that chose tokens
        for chunk in x.split(9):
            l8, bound = screen.bounds(chunk.contiguous())
            exact = screen(chunk.contiguous()).double()
            err = (exact - l8.double()).abs()
            assert (err <= bound).all()
            worst = max(worst, float((err / bound).max()))
            rows += chunk.shape[0]
    assert rows >= 60 and worst < 1


def test_bound_holds_on_smollm2():
    _bound_check(smollm2_dotf(torch.float32), smollm2_hf(torch.float32), real_prompts(1, 1))


@pytest.mark.slow
def test_bound_holds_on_qwen():
    from dotf import checkpoints
    if not checkpoints.is_prepared("qwen2.5-coder-0.5b"):
        pytest.skip("qwen2.5-coder-0.5b is not prepared here")
    from transformers import AutoModelForCausalLM
    model = dotf.load("qwen2.5-coder-0.5b")
    hf = AutoModelForCausalLM.from_pretrained(str(model.source_dir), dtype=torch.float32).eval()
    _bound_check(model, hf, real_prompts(2, 2)[1:3])


def _real_prompt_tokens(index: int, **kw):
    m = smollm2_dotf(torch.float32)
    _, ids = real_prompts(3, 3, 2)[index]
    on = m.generate(ids, max_new_tokens=64, **kw)
    off = m.generate(ids, max_new_tokens=64, lm_head_screen=False, **kw)
    return on.tokens, off.tokens


@pytest.mark.parametrize("strategy", ["ar", "dotf"])
def test_smollm2_greedy_tokens_unchanged(strategy):
    for index in (0, 3):
        on, off = _real_prompt_tokens(index, strategy=strategy)
        assert on == off, index


@pytest.mark.slow
@pytest.mark.parametrize("index", range(8))
@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_smollm2_greedy_tokens_unchanged_all_prompts(index, strategy):
    on, off = _real_prompt_tokens(index, strategy=strategy)
    assert on == off


@pytest.mark.slow
@pytest.mark.parametrize("index", range(0, 8, 3))
@pytest.mark.parametrize("strategy", ["ar", "dotf"])
def test_smollm2_sampled_tokens_unchanged(index, strategy):
    for seed in range(2):
        on, off = _real_prompt_tokens(index, strategy=strategy, do_sample=True, seed=seed, temperature=0.7, top_p=0.9)
        assert on == off, seed
