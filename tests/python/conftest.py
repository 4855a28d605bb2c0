"""Shared fixtures of the Python tests (tests/python/<subject>/): tiny random transformers models of
every supported architecture, one tiny model with its reference outputs for the error tests, the real
SmolLM2-135M (prepared offline from its PyPI GGUF), and real prompts (bench/prompts.py)."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

import dotf

transformers = pytest.importorskip("transformers")

# bench/prompts.py holds the benchmark and test prompts; it is imported as `prompts`, as the benchmarks do.
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            max_position_embeddings=512)

# name -> (config class, model class, extra config fields)
TINY_ARCHS = {
    "llama-mha": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=4)),
    "llama-gqa": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama3-rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        num_key_value_heads=2, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64))),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_key_value_heads=2, sliding_window=None)),
    "qwen2-bias": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=False)),
}


@pytest.fixture(scope="session", autouse=True)
def _one_intra_op_thread():
    """One intra-op thread for every test: on small models and few shared cores OpenMP threads only add
    contention (2 threads made tiny-model runs 50-400x slower here). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_tiny_hf(arch: str, seed: int = 0, dtype=torch.float32):
    cfg_cls, model_cls, extra = TINY_ARCHS[arch]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_cls)(**TINY, **extra)
    model = getattr(transformers, model_cls)(cfg).eval().to(dtype)
    # Random init makes every layer alike; scale the residual writes so layers differ in redundancy
    # (as in trained models) and speculative drafts get both accepted and rejected.
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.mul_(0.3 + 0.5 * i)
            if hasattr(layer.self_attn.q_proj, "bias") and layer.self_attn.q_proj.bias is not None:
                layer.self_attn.q_proj.bias.normal_(0, 0.1)
                layer.self_attn.k_proj.bias.normal_(0, 0.1)
                layer.self_attn.v_proj.bias.normal_(0, 0.1)
    return model


@pytest.fixture(params=list(TINY_ARCHS))
def tiny_arch(request):
    return request.param


# ---- one tiny model and its reference outputs, for the tests that feed it bad input -----------------
# Bad input gets a clear Python exception (naming the argument, file or field and the allowed range),
# never a crash, a hang or garbage tokens; and the model stays usable after every error.
PROMPT = list(range(10, 30))
N_NEW = 12


@pytest.fixture(scope="module")
def hf_model():
    return make_tiny_hf("llama-gqa")


@pytest.fixture(scope="module")
def model(hf_model):
    return dotf.load(hf_model)


@pytest.fixture(scope="module")
def reference(model):
    return {s: model.generate(PROMPT, max_new_tokens=N_NEW, strategy=s, threshold=0.0).tokens
            for s in ("ar", "asd", "dotf")}


def assert_usable(model, reference):
    """After an error the same model generates the right tokens, with and without speculation."""
    assert model.generate(PROMPT, max_new_tokens=N_NEW).tokens == reference["ar"]
    assert model.generate(PROMPT, max_new_tokens=N_NEW, strategy="asd", threshold=0.0).tokens == reference["ar"]


# ---- the real SmolLM2-135M and real prompts ----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def smollm2_path():
    from dotf import checkpoints
    return checkpoints.prepare("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_dir():
    return smollm2_path()


@functools.lru_cache(maxsize=None)
def smollm2_dotf(dtype: torch.dtype):
    return dotf.load(str(smollm2_path()), dtype=dtype)


@functools.lru_cache(maxsize=None)
def smollm2_hf(dtype: torch.dtype):
    return transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_path()), dtype=dtype).eval()


@functools.lru_cache(maxsize=None)
def real_prompts(n_code: int, n_summarize: int, n_chat: int = 0) -> tuple:
    """Token ids of real prompts: HumanEval completions, chat-templated aclsum train/val summaries."""
    import prompts
    prompts.ensure_installed()
    tok = smollm2_dotf(torch.float32).tokenizer
    items = []
    items += [(f"code:{p['id']}", prompts.encode_prompt(tok, p, chat=False)) for p in prompts.humaneval_prompts(n_code)]
    half = (n_summarize + 1) // 2
    summaries = prompts.summarize_prompts(half, split="train") + prompts.summarize_prompts(n_summarize - half,
                                                                                           split="validation")
    items += [(f"sum:{p['id']}", prompts.encode_prompt(tok, p, chat=True)) for p in summaries]
    if n_chat:
        items += [(f"chat:{p['id']}", prompts.encode_prompt(tok, p, chat=True))
                  for p in prompts.sharegpt_first_turns(n_chat, seed=0)]
    return tuple(items)
