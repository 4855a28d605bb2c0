"""The CPU linear paths, end to end through the model: dotf.load(..., linear_path=...).

C++ tests (tests/cpp/ops/test_linear.cpp) check every path against float64 per layer; these check the
paths are wired through loading and give the same model (fp32), a close model (bf16), or a close
draft (int8)."""
import pytest
import torch

import dotf
from conftest import make_tiny_hf

IDS = torch.randint(0, 256, (48,), generator=torch.Generator().manual_seed(3))
EXACT_PATHS = ["onednn", "avx2"]  # the same function as "aten", laid out differently


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def has_avx2():
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def load(hf, path, dtype=torch.float32):
    if path == "avx2" and not has_avx2():
        pytest.skip("linear_path='avx2' needs an AVX2+FMA CPU")
    return dotf.load(hf, dtype=dtype, linear_path=path)


@pytest.fixture(scope="module", params=["llama-gqa", "qwen2-bias"])
def hf(request):
    return make_tiny_hf(request.param)


@pytest.fixture(scope="module")
def aten_logits(hf):
    return dotf.load(hf).forward_logits(IDS)


@pytest.mark.parametrize("path", EXACT_PATHS)
def test_fp32_paths_match_aten(hf, aten_logits, path):
    assert rel_err(load(hf, path).forward_logits(IDS), aten_logits) <= 1e-5


@pytest.mark.parametrize("path", EXACT_PATHS)
def test_bf16_paths_match_aten_bf16(hf, aten_logits, path):
    ours = load(hf, path, torch.bfloat16).forward_logits(IDS)
    aten = dotf.load(hf, dtype=torch.bfloat16).forward_logits(IDS)
    assert ours.dtype == torch.bfloat16
    # Both are bf16 models: each is a few bf16 steps from fp32, and from each other.
    assert rel_err(aten, aten_logits) <= 3e-2
    assert rel_err(ours, aten_logits) <= 3e-2
    assert rel_err(ours, aten) <= 3e-2


@pytest.mark.parametrize("path", EXACT_PATHS)
def test_exact_paths_generate_the_same_tokens(hf, path):
    ref = dotf.load(hf).generate(IDS[:8], max_new_tokens=24, strategy="ar").tokens
    assert load(hf, path).generate(IDS[:8], max_new_tokens=24, strategy="ar").tokens == ref


def test_int8_is_a_close_draft(hf, aten_logits):
    logits = dotf.load(hf, linear_path="int8").forward_logits(IDS)
    err = rel_err(logits, aten_logits)
    # Quantized, so not the same numbers (proves the int8 path ran) ...
    assert err > 1e-4
    # ... but close: weights within half an int8 step per channel, activations 7-bit per call.
    assert err <= 0.1
    agree = (logits.argmax(-1) == aten_logits.argmax(-1)).float().mean().item()
    assert agree >= 0.9, f"int8 greedy tokens agree with fp32 at only {agree:.0%} of positions"


def test_int8_with_bf16_model(hf, aten_logits):
    logits = dotf.load(hf, dtype=torch.bfloat16, linear_path="int8").forward_logits(IDS)
    assert logits.dtype == torch.bfloat16
    assert rel_err(logits, aten_logits) <= 0.1


def test_onednn_refuses_float16(hf):
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        dotf.load(hf, dtype=torch.float16, linear_path="onednn")


def test_unknown_linear_path_is_refused(hf):
    with pytest.raises(ValueError, match="linear path must be one of"):
        dotf.load(hf, linear_path="mkl")
