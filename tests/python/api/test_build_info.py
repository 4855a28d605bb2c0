"""dotf.build_info(): the transparent huge pages packed weights ask for, and the CUDA kernels of a
CUDA build."""
import sys

import pytest
import torch

import dotf
from dotf import _C


def test_build_info_reports_huge_pages(monkeypatch):
    """Packed weights ask for transparent huge pages unless DOTF_HUGE_PAGES=0 (read at each packing)."""
    info = dotf.build_info()
    assert info["transparent_huge_pages"] in ("always", "madvise", "never", "unavailable")
    monkeypatch.setenv("DOTF_HUGE_PAGES", "0")
    assert dotf.build_info()["huge_pages"] is False
    monkeypatch.setenv("DOTF_HUGE_PAGES", "1")
    assert dotf.build_info()["huge_pages"] is (sys.platform == "linux")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not _C.build_info()["cuda"], reason="dotf was built without CUDA kernels")
def test_build_info_reports_cuda():
    info = dotf.build_info()
    assert info["cuda"] is True and info["cuda_archs"]


def test_build_info_reports_the_int8_kernel_chosen_for_this_cpu():
    """The int8 linear kernel runs its AVX-512 VNNI build where the CPU has it, unless switched off
    (DOTF_AVX512=0 at start-up; the testing hook here), and its AVX2 build otherwise."""
    ops = _C.testing.ops
    isa = dotf.build_info()["int8_linear_isa"]
    assert isa in ("avx512_vnni", "avx2", "none")
    if not ops.cpu_has_avx512_vnni():
        pytest.skip("this CPU lacks AVX-512 F/VL/VNNI: only the AVX2 build can run")
    assert isa == "avx512_vnni"
    try:
        ops.set_avx512_kernels(False)
        assert dotf.build_info()["int8_linear_isa"] == "avx2"
    finally:
        ops.set_avx512_kernels(True)


def test_build_info_reports_the_attention_kernel_chosen_for_this_cpu():
    """The fused attention kernel runs its AVX512VL build where the CPU has AVX-512 F and VL, unless
    switched off, and its AVX2 build otherwise (the two give the same bits: tests/python/ops/test_attention_avx512.py)."""
    ops = _C.testing.ops
    isa = dotf.build_info()["attention_isa"]
    assert isa in ("avx512vl", "avx2", "none")
    if not ops.cpu_has_avx512vl():
        pytest.skip("this CPU lacks AVX-512 F/VL: only the AVX2 build can run")
    assert isa == "avx512vl"
    try:
        ops.set_avx512_kernels(False)
        assert dotf.build_info()["attention_isa"] == "avx2"
    finally:
        ops.set_avx512_kernels(True)
