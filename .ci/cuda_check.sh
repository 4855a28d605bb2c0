#!/usr/bin/env bash
# CUDA compile check: builds dotf._C with the CUDA kernels for sm_90 on a machine without a GPU.
# Needs nvcc 13.x (CUDA_HOME or /usr/local/cuda-13.0) and a cu130 torch (torch==2.14.1 here).
# Fails on any configure or compile error. Nothing is run on a device.
#   DOTF_CUDA_VENV   venv to (create and) use            default /tmp/dotf-cuda-venv
#   DOTF_CUDA_BUILD  build directory                      default build/cuda-check
#   DOTF_JOBS        parallel compile jobs                default: nproc
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DOTF_CUDA_VENV:-/tmp/dotf-cuda-venv}"
BUILD="${DOTF_CUDA_BUILD:-$ROOT/build/cuda-check}"
JOBS="${DOTF_JOBS:-$(nproc)}"
T0=$(date +%s)

if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda-13.0 ]]; then export CUDA_HOME=/usr/local/cuda-13.0; fi
if [[ -n "${CUDA_HOME:-}" ]]; then export PATH="$CUDA_HOME/bin:$PATH"; fi
command -v nvcc >/dev/null || { echo "cuda_check: nvcc not found (set CUDA_HOME)" >&2; exit 2; }

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import torch, cmake, ninja, numpy; assert torch.version.cuda" 2>/dev/null; then
  echo "cuda_check: creating $VENV (torch 2.14.1 cu130, ~5.5 GB)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q torch==2.14.1 numpy "cmake>=3.26" ninja
fi
"$VENV/bin/python" -c "import torch; print('cuda_check: torch', torch.__version__, 'cuda', torch.version.cuda)"
export PATH="$VENV/bin:$PATH"   # pip's cmake>=3.26 (system 3.25 refuses CUDA C++20) and ninja

export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export DOTF_CUDA=ON
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DPython_EXECUTABLE="$VENV/bin/python" -DDOTF_CUDA=ON \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$BUILD/out"
cmake --build "$BUILD" -j "$JOBS"

# The module must exist, and the core library must define every CUDA entry point declared in
# csrc/ops/cuda/entries.h, from the CUDA wrappers: the CPU-only stand-ins (*_cpu_only.cpp) must not be in it.
SO=$(ls "$BUILD"/out/_C*.so)
SYMS=$(nm -C --defined-only "$BUILD/libdotf_core.a")
ENTRIES=$(grep -E '^[^/ ].* [a-z0-9_]+_cuda\(' "$ROOT/csrc/ops/cuda/entries.h" | grep -oE '[a-z0-9_]+_cuda\(' | tr -d '(')
[[ $(wc -l <<<"$ENTRIES") -ge 6 ]] || { echo "cuda_check: found only [$ENTRIES] in csrc/ops/cuda/entries.h" >&2; exit 1; }
for sym in $ENTRIES; do
  grep -q " T dotf::$sym(" <<<"$SYMS" || { echo "cuda_check: dotf::$sym is not defined in libdotf_core.a" >&2; exit 1; }
done
if grep -q "dotf was built without CUDA" "$BUILD/libdotf_core.a"; then
  echo "cuda_check: libdotf_core.a holds a CPU-only stand-in (*_cpu_only.cpp)" >&2; exit 1
fi
# Device code for sm_90 must be embedded.
if command -v cuobjdump >/dev/null; then
  ELFS=$(cuobjdump --list-elf "$SO")
  grep -q sm_90 <<<"$ELFS" || { echo "cuda_check: no sm_90 cubin in $SO" >&2; exit 1; }
fi
echo "cuda_check: OK ($(( $(date +%s) - T0 )) s) -> $SO"
