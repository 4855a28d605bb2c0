"""Thin CMake driver: `pip install --no-build-isolation .` (or `-e .`) builds dotf._C with CMake.

Build isolation would install a second torch into a temporary env, so torch is deliberately not a
build requirement: the torch already installed is the one we build against.
Environment knobs: DOTF_CUDA=AUTO|ON|OFF, TORCH_CUDA_ARCH_LIST (default 9.0), DOTF_BUILD_TYPE,
DOTF_BUILD_TESTS=1 / DOTF_BUILD_BENCH=1 (also build the C++ test and benchmark binaries), DOTF_JOBS.
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _build_dir() -> Path:
    """A fixed directory per (python, torch, config) keeps editable rebuilds incremental."""
    import torch  # noqa: PLC0415  (imported late: only building needs it)

    key = "-".join([
        f"py{sys.version_info.major}{sys.version_info.minor}",
        f"torch{torch.__version__.replace('+', '_')}",
        os.environ.get("DOTF_CUDA", "AUTO").lower(),
        os.environ.get("DOTF_BUILD_TYPE", "Release").lower(),
    ])
    if os.environ.get("DOTF_SANITIZE") == "1":
        key += "-asan"
    return ROOT / "build" / key


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = _build_dir()
        build_dir.mkdir(parents=True, exist_ok=True)
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        on = lambda name: "ON" if os.environ.get(name) == "1" else "OFF"  # noqa: E731
        configure = [
            "cmake", str(ROOT), "-G", "Ninja",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('DOTF_BUILD_TYPE', 'Release')}",
            f"-DDOTF_CUDA={os.environ.get('DOTF_CUDA', 'AUTO')}",
            f"-DDOTF_BUILD_TESTS={on('DOTF_BUILD_TESTS')}",
            f"-DDOTF_BUILD_BENCH={on('DOTF_BUILD_BENCH')}",
            f"-DDOTF_SANITIZE={on('DOTF_SANITIZE')}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
        ]
        subprocess.run(configure, cwd=build_dir, check=True)
        jobs = os.environ.get("DOTF_JOBS", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_dir, check=True)
        # Scripts (ctest, microbenchmarks) find the binaries of the latest build here.
        (ROOT / "build" / "LAST").write_text(str(build_dir) + "\n")


setup(
    ext_modules=[Extension("dotf._C", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    package_dir={"": "python"},
    packages=["dotf"],
)
