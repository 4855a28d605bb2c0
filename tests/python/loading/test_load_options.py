"""dotf.load's options: dtype, device, max_seq_len and linear_path out of range or of the wrong type get a
clear Python exception."""
from __future__ import annotations

import pytest
import torch

import dotf
from dotf import api


def test_float64_on_cuda_is_refused(hf_model):
    with pytest.raises(ValueError, match="float64|CUDA|cuda"):
        dotf.load(hf_model, dtype=torch.float64, device="cuda")
    # The dtype rule itself, independent of this build having CUDA:
    with pytest.raises(ValueError, match="float64 is supported on CPU only"):
        api._check_dtype(torch.float64, torch.device("cuda", 0))


@pytest.mark.skipif(dotf.build_info()["cuda"], reason="this build has CUDA kernels")
def test_cuda_on_a_cpu_build(hf_model):
    with pytest.raises(ValueError, match="CPU-only"):
        dotf.load(hf_model, device="cuda")


@pytest.mark.parametrize("device,exc,match", [
    ("tpu", ValueError, "not a valid torch device"),
    ("meta", ValueError, "device must be 'cpu' or 'cuda'"),
    (3.5, ValueError, "not a valid torch device"),
])
def test_bad_device(hf_model, device, exc, match):
    with pytest.raises(exc, match=match):
        dotf.load(hf_model, device=device)


@pytest.mark.parametrize("dtype,exc,match", [
    ("float32", TypeError, "dtype must be a torch.dtype"),
    (torch.float32.__class__, TypeError, "dtype must be a torch.dtype"),
    (torch.int32, ValueError, "dtype torch.int32 is not supported"),
    (torch.complex64, ValueError, "is not supported"),
])
def test_bad_dtype(hf_model, dtype, exc, match):
    with pytest.raises(exc, match=match):
        dotf.load(hf_model, dtype=dtype)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(max_seq_len=0), ValueError, "max_seq_len must be >= 1"),
    (dict(max_seq_len=10**6), ValueError, "exceeds the model's max_position_embeddings=512"),
    (dict(max_seq_len=64.0), TypeError, "max_seq_len must be an int"),
    (dict(linear_path="fp4"), ValueError, "linear path must be one of"),
])
def test_bad_load_options(hf_model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        dotf.load(hf_model, **kwargs)
