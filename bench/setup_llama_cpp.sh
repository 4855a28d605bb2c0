#!/usr/bin/env bash
# Sets up llama.cpp as a benchmark peer for bench/decode.py (methods llama_cpp, llama_cpp_lookup):
#   1. llama-cpp-python 0.3.36 compiled from its PyPI source package into the project venv (.venv, or
#      $DOTF_VENV), with the instruction sets chosen here from /proc/cpuinfo (~4 minutes on 2 cores);
#   2. that source package unpacked in $DOTF_LLAMA_CPP_SRC (~/.cache/dotf/llama-cpp-python-src), whose
#      vendor/llama.cpp/convert_hf_to_gguf.py (with its gguf-py) converts dotf's checkpoints to GGUF;
#   3. sentencepiece, which that converter imports even for BPE tokenizers.
# Kept out of scripts/setup.sh: the tests do not need it. Runs again cheaply: each step is skipped when
# its result is already there (the build when the installed version was built with the same flags).
#
# Build flags: GGML_NATIVE=OFF and explicit instruction sets, so the build is the same whatever machine
# compiles it and states what it uses: the AVX2 set (AVX, AVX2, FMA, F16C, BMI2) on AVX2 machines, plus
# AVX-512F/VNNI/BF16/VBMI where cpuinfo lists them. AMX stays OFF: with GGML_NATIVE=ON on an AMX Xeon
# VM llama.cpp's AMX buffers crash with SIGSEGV in the first decode of a Q8_0 model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DOTF_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
VERSION=0.3.36
SRC="${DOTF_LLAMA_CPP_SRC:-$HOME/.cache/dotf/llama-cpp-python-src}"
[[ -x "$PY" ]] || { echo "setup_llama_cpp: no venv at $VENV (run scripts/setup.sh, or set DOTF_VENV)" >&2; exit 1; }

# --- build flags from the CPU's features -------------------------------------------------------------
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ "$flags" == *" $1 "* ]]; }
onoff() { if has "$1"; then echo ON; else echo OFF; fi; }
if has avx2; then
  args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=$(onoff fma) -DGGML_F16C=$(onoff f16c)"
  args+=" -DGGML_BMI2=$(onoff bmi2) -DGGML_AVX_VNNI=$(onoff avx_vnni)"
  if has avx512f; then
    args+=" -DGGML_AVX512=ON -DGGML_AVX512_VNNI=$(onoff avx512_vnni) -DGGML_AVX512_BF16=$(onoff avx512_bf16)"
    args+=" -DGGML_AVX512_VBMI=$(onoff avx512vbmi)"
  else
    args+=" -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX512_VBMI=OFF"
  fi
  args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
else
  # Not an x86 machine with AVX2 (e.g. ARM): let llama.cpp pick for the machine that builds it.
  args="-DGGML_NATIVE=ON"
fi
args+=" -DGGML_BLAS=OFF"
echo "setup_llama_cpp: CMAKE_ARGS=$args"

# --- llama-cpp-python, compiled ------------------------------------------------------------------------
STAMP="$VENV/share/dotf/llama_cpp_build_flags"  # the flags the installed build was compiled with
installed="$("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)"
if [[ "$installed" == "$VERSION" && -f "$STAMP" && "$(cat "$STAMP")" == "$args" ]]; then
  echo "setup_llama_cpp: llama-cpp-python $VERSION already built with these flags"
else
  echo "setup_llama_cpp: compiling llama-cpp-python $VERSION (about 4 minutes on 2 cores)"
  log="$(mktemp -t llama_cpp_build.XXXXXX.log)"
  # --no-binary names the package only (':all:' would compile cmake and the other build tools too);
  # --no-cache-dir because pip caches the built wheel without its CMAKE_ARGS.
  if ! CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip install -v --no-cache-dir \
      --force-reinstall --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "setup_llama_cpp: build failed; full log in $log" >&2
    exit 1
  fi
  # Its runtime dependencies, from wheels (--no-deps above keeps --force-reinstall off numpy etc.).
  "$PY" -m pip install -q "llama-cpp-python==$VERSION"
  mkdir -p "$(dirname "$STAMP")"
  echo "$args" >"$STAMP"
  rm -f "$log"
fi

# --- the source package, for convert_hf_to_gguf.py -------------------------------------------------------
if [[ ! -f "$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" ]]; then
  mkdir -p "$SRC"
  if [[ ! -f "$SRC/llama_cpp_python-$VERSION.tar.gz" ]]; then
    "$PY" -m pip download -q --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$SRC"
  fi
  tar xzf "$SRC/llama_cpp_python-$VERSION.tar.gz" -C "$SRC"
fi
echo "setup_llama_cpp: converter at $SRC/llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py"
"$PY" -c 'import sentencepiece' 2>/dev/null || "$PY" -m pip install -q sentencepiece

"$PY" -c 'import llama_cpp; print("setup_llama_cpp: ok, llama-cpp-python", llama_cpp.__version__, "|",
llama_cpp.llama_print_system_info().decode().strip())'
