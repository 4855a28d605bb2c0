#!/usr/bin/env bash
# Sets up a fresh machine: a venv (.venv), torch (CPU 2.13.0 unless DOTF_TORCH says otherwise), the
# project's requirements, Debian's GoogleTest/Google Benchmark, and builds dotf with its C++ tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DOTF_VENV:-$ROOT/.venv}"
cd "$ROOT"
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==${DOTF_TORCH:-2.13.0}"
"$PY" -m pip install -q -r requirements.txt
if ! { [[ -f /usr/include/gtest/gtest.h ]] && [[ -f /usr/include/benchmark/benchmark.h ]]; }; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq libgtest-dev libbenchmark-dev >/dev/null
  else
    echo "setup: install libgtest-dev and libbenchmark-dev for the C++ tests" >&2
  fi
fi
export PATH="$VENV/bin:$PATH"  # pip's cmake (>= 3.26) and ninja
DOTF_BUILD_TESTS=1 DOTF_BUILD_BENCH=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -m dotf models prepare smollm2-135m >/dev/null
"$PY" -c "import sys; sys.path.insert(0, 'bench'); import prompts; prompts.ensure_installed()"
echo "setup: ok ($("$PY" -c 'import dotf, json; print(json.dumps(dotf.build_info()["cuda"]))') CUDA kernels)"
