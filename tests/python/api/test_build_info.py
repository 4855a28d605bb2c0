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


@pytest.mark.parametrize("kernel,wide,cpu_has", [
    ("int8_linear_isa", "avx512_vnni", "cpu_has_avx512_vnni"),  # needs AVX-512 F/VL/VNNI
    ("attention_isa", "avx512vl", "cpu_has_avx512vl"),  # needs AVX-512 F/VL; same bits as AVX2
    ("int8_attention_isa", "avx512_vnni", "cpu_has_avx512_vnni"),  # the int8 mirror's integer kernel
])
def test_build_info_reports_the_kernel_build_chosen_for_this_cpu(kernel, wide, cpu_has):
    """The int8 linear and attention kernels run their AVX-512 builds where the CPU has them, unless
    switched off (DOTF_AVX512=0 at start-up; the testing hook here), and their AVX2 builds otherwise."""
    ops = _C.testing.ops
    isa = dotf.build_info()[kernel]
    assert isa in (wide, "avx2", "none")
    if not getattr(ops, cpu_has)():
        pytest.skip(f"this CPU lacks what the {wide} build needs: only the AVX2 build can run")
    assert isa == wide
    try:
        ops.set_avx512_kernels(False)
        assert dotf.build_info()[kernel] == "avx2"
    finally:
        ops.set_avx512_kernels(True)
