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
