"""What dotf.load accepts besides a checkpoint directory: a transformers model in memory (of a supported
class, with its weights loaded), and nothing else."""
from __future__ import annotations

import pytest
import torch

import dotf
from conftest import make_tiny_hf


def test_unsupported_pretrained_model_class():
    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64,
                                                                bos_token_id=0, eos_token_id=0))
    with pytest.raises(ValueError, match="model class GPT2LMHeadModel is not supported"):
        dotf.load(gpt2)


def test_pretrained_model_on_meta_device():
    transformers = pytest.importorskip("transformers")
    cfg = make_tiny_hf("llama-gqa").config
    with torch.device("meta"):
        meta = transformers.LlamaForCausalLM(cfg)
    with pytest.raises(ValueError, match="meta device"):
        dotf.load(meta)


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="src must be a checkpoint directory"):
        dotf.load(42)
