"""Logits and greedy-generation parity with transformers."""
import pytest
import torch

import dotf
from conftest import make_tiny_hf, real_prompts, smollm2_dotf, smollm2_hf


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_tiny_logits_match_transformers(tiny_arch):
    hf = make_tiny_hf(tiny_arch)
    m = dotf.load(hf)
    ids = torch.randint(0, 256, (37,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    assert rel_err(m.forward_logits(ids), ref) <= 1e-4


def test_tiny_checkpoint_directory_matches_instance(tmp_path, tiny_arch):
    hf = make_tiny_hf(tiny_arch)
    hf.save_pretrained(tmp_path)
    ids = list(range(3, 40))
    a = dotf.load(str(tmp_path)).forward_logits(ids)
    b = dotf.load(hf).forward_logits(ids)
    assert torch.equal(a, b)


def test_llama3_rope_frequencies_match_transformers():
    hf = make_tiny_hf("llama3-rope")
    m = dotf.load(hf)
    ours = m.config.rope_inv_freq()
    theirs = hf.model.rotary_emb.inv_freq
    assert torch.equal(ours, theirs.float())


def test_tiny_greedy_generation_matches_transformers(tiny_arch):
    hf = make_tiny_hf(tiny_arch, dtype=torch.float64)
    m = dotf.load(hf, dtype=torch.float64)
    ids = torch.randint(0, 256, (12,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf.generate(ids[None], max_new_tokens=40, min_new_tokens=40, do_sample=False)[0, 12:].tolist()
    assert m.generate(ids, max_new_tokens=40).tokens == ref


@pytest.mark.slow
def test_smollm2_logits_match_transformers():
    _, ids = real_prompts(1, 1)[1]
    with torch.no_grad():
        ref = smollm2_hf(torch.float32)(torch.tensor([ids])).logits[0]
    assert rel_err(smollm2_dotf(torch.float32).forward_logits(ids), ref) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("index", range(5))
def test_smollm2_greedy_64_tokens_identical_float64(index):
    name, ids = real_prompts(3, 3)[index]
    hf = smollm2_hf(torch.float64)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False)
    ref = ref[0, len(ids):].tolist()
    m = smollm2_dotf(torch.float64)
    ours = m.generate(ids, max_new_tokens=64, eos_token_id=m.eos_token_ids).tokens
    assert ours == ref, name
