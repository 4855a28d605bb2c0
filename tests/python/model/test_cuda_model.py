"""End to end on CUDA: tiny random transformers models loaded with dotf.load(..., device="cuda").

- greedy tokens on CUDA equal those on CPU (float32), and strategy "asd" returns exactly the "ar"
  tokens (float32), with a fixed draft plan (so drafting surely happens) and with selection;
- CUDA logits match transformers' (float32 closely, bfloat16 loosely), over prompts long enough to
  use several query tiles and KV splits in the attention kernel.
Head dims 16/32 (generic attention kernel), 64 and 128 (specialised kernels) are all covered.
Skipped without a CUDA device or a CUDA build of dotf.
"""
from __future__ import annotations

import functools

import pytest
import torch

import dotf
from dotf import _C

transformers = pytest.importorskip("transformers")
from conftest import TINY_ARCHS, make_tiny_hf  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not _C.build_info()["cuda"], reason="dotf was built without CUDA kernels"),
]

# Wider tiny models: head_dim 64 and 128 take the specialised attention kernels.
WIDE_ARCHS = {
    "llama-d64": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2)),
    "llama-d128": ("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1)),
    "qwen2-d128": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        vocab_size=512, hidden_size=384, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
        num_key_value_heads=1, tie_word_embeddings=True)),
}
ALL_ARCHS = list(TINY_ARCHS) + list(WIDE_ARCHS)


@functools.lru_cache(maxsize=None)
def hf_model(arch: str):
    if arch in TINY_ARCHS:
        return make_tiny_hf(arch, seed=1)
    cfg_cls, model_cls, fields = WIDE_ARCHS[arch]
    torch.manual_seed(1)
    cfg = getattr(transformers, cfg_cls)(max_position_embeddings=2048, **fields)
    model = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # as conftest.make_tiny_hf: layers of different redundancy
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.mul_(0.3 + 0.5 * i)
            if getattr(layer.self_attn.q_proj, "bias", None) is not None:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.1)
    return model


@functools.lru_cache(maxsize=None)
def loaded(arch: str, device: str, dtype: torch.dtype = torch.float32):
    return dotf.load(hf_model(arch), dtype=dtype, device=device)


def prompt_ids(arch: str, length: int, seed: int = 0) -> list[int]:
    vocab = hf_model(arch).config.vocab_size
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (length,), generator=g).tolist()


def draft_plan(num_layers: int) -> list[bool]:
    """Keep layer 0's attention, drop every other one after it."""
    return [i == 0 or i % 2 == 0 for i in range(num_layers)]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    assert torch.isfinite(out).all()
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_cuda_greedy_matches_cpu_and_asd_is_lossless(arch):
    cpu, gpu = loaded(arch, "cpu"), loaded(arch, "cuda")
    assert gpu.device.type == "cuda"
    prompt = prompt_ids(arch, 24)
    n = 48
    ar_cpu = cpu.generate(prompt, n, strategy="ar").tokens
    ar_gpu = gpu.generate(prompt, n, strategy="ar").tokens
    assert len(ar_gpu) == n
    assert ar_gpu == ar_cpu, "CUDA and CPU greedy tokens differ (float32)"

    fixed = gpu.generate(prompt, n, strategy="asd", draft_attention=draft_plan(gpu.num_layers))
    assert fixed.tokens == ar_gpu, "asd with a fixed draft plan is not lossless on CUDA"
    assert fixed.stats["rounds"] > 0 and fixed.stats["drafted"] > 0, "the fixed plan should have drafted"
    selected = gpu.generate(prompt, n, strategy="asd")
    assert selected.tokens == ar_gpu, "asd with selected plan is not lossless on CUDA"


@pytest.mark.parametrize("arch", list(WIDE_ARCHS))
@pytest.mark.parametrize("window", [0, 64])
def test_cuda_int8_kv_mirror_drafts_are_lossless(arch, window):
    # The draft reads the int8 mirror (ops/cuda/attention_int8.cu), through a window or not; the
    # verify reads the exact cache, so the tokens are plain decoding's whatever the draft proposes.
    gpu = loaded(arch, "cuda")
    prompt = prompt_ids(arch, min(400, gpu.max_seq_len - 60), seed=5)
    ar = gpu.generate(prompt, 40, strategy="ar").tokens
    for strategy, extra in (("asd", dict(draft_attention=draft_plan(gpu.num_layers))), ("dotf", {})):
        res = gpu.generate(prompt, 40, strategy=strategy, draft_kv="int8", draft_window=window, **extra)
        assert res.tokens == ar, (strategy, window)
        assert res.stats["accepted"] > 0, "an int8-KV draft of the same weights should agree sometimes"


@pytest.mark.parametrize("arch", ["llama-gqa", "llama-d64", "llama-d128", "qwen2-d128"])
def test_cuda_long_context_asd_is_lossless(arch):
    # A prompt of several hundred tokens: multi-tile prefill, then drafts/verifies over KV splits.
    gpu = loaded(arch, "cuda")
    length = min(600, gpu.max_seq_len - 40)
    prompt = prompt_ids(arch, length, seed=3)
    ar = gpu.generate(prompt, 32, strategy="ar").tokens
    asd = gpu.generate(prompt, 32, strategy="asd", draft_attention=draft_plan(gpu.num_layers))
    assert asd.tokens == ar
    assert ar == loaded(arch, "cpu").generate(prompt, 32, strategy="ar").tokens


@pytest.mark.parametrize("arch", ["llama-gqa", "llama-tied", "qwen2-bias", "llama-d64", "llama-d128", "qwen2-d128"])
def test_cuda_logits_match_transformers(arch):
    model = hf_model(arch)
    length = min(300, model.config.max_position_embeddings)
    ids = prompt_ids(arch, length, seed=5)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float()
    got = loaded(arch, "cuda").forward_logits(ids)
    assert got.is_cuda and got.shape == ref.shape
    assert rel_err(got, ref) <= 1e-4
    got_bf16 = loaded(arch, "cuda", torch.bfloat16).forward_logits(ids)
    assert got_bf16.dtype == torch.bfloat16
    assert rel_err(got_bf16, ref) <= 5e-2
    got_fp16 = loaded(arch, "cuda", torch.float16).forward_logits(ids)
    assert rel_err(got_fp16, ref) <= 2e-2


def test_cuda_low_level_forward_matches_cpu():
    # The step shapes the decoder uses: prefill, one token, k+1 tokens, over the same cache.
    arch = "llama-d128"
    cpu, gpu = loaded(arch, "cpu"), loaded(arch, "cuda")
    ids = prompt_ids(arch, 40, seed=7)
    outs = []
    for m in (cpu, gpu):
        cache = m.new_cache(64)
        a, _, _ = m.forward(ids[:30], 0, cache, logits="last")
        b, _, _ = m.forward(ids[30:31], 30, cache, logits="last")
        c, sim, _ = m.forward(ids[31:40], 31, cache, similarity=True, logits="all")
        assert cache.length == 40
        outs.append((a, b, c, sim))
    for x_cpu, x_gpu in zip(*outs):
        assert x_gpu.is_cuda
        assert rel_err(x_gpu, x_cpu) <= 1e-4


def test_cuda_refuses_float64():
    with pytest.raises(ValueError, match="float64"):
        dotf.load(hf_model("llama-gqa"), dtype=torch.float64, device="cuda")
