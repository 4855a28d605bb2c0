#!/usr/bin/env bash
# One GPU session, offline: build dotf with its CUDA kernels, run the CUDA tests, time the steps.
#
#   bench/gpu_run.sh OUTDIR
#
# Expects the H100 machine's environment (see /work/shared/notes/build.md): python3 with torch
# (+cu130), nvcc 13, CMake >= 3.26, ninja, pybind11, transformers, safetensors; no internet.
# Writes to OUTDIR (at most eight files, the most a device session brings back): env.txt (machine,
# versions, dotf.build_info()), build.log, pytest_ops.log (kernels; the C++ tests too), pytest_e2e.log
# (end to end and CUDA graphs; native backtraces of tests that crashed their worker),
# gpu_step_bench.json/.log (with the quantized GEMV timings and the draft steps derived from them),
# dotf_bench.json (the C++ microbenchmarks' CUDA cases, when .gpu_deps was
# carried: see bench/gpu_deps.sh), status.json (each step's exit code and seconds). Runs every step even
# when an earlier one fails (except that nothing runs without a successful build); exits non-zero
# when any step failed.
# Knobs: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0), DOTF_JOBS, SKIP_BUILD=1 (rerun
# with the dotf already installed), PYTEST_TIMEOUT (s per test), PYTEST_WORKERS (xdist processes),
# BENCH_ARGS (extra arguments for gpu_step_bench.py, e.g. "--contexts 512 --iters 10").
set -uo pipefail

OUT="${1:?usage: bench/gpu_run.sh OUTDIR}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/{env.txt,build.log,pytest_ops.log,pytest_e2e.log,gpu_step_bench.json,gpu_step_bench.log,dotf_bench.json,status.json}
cd "$ROOT"

declare -A RC SECS
ORDER=()
step() {  # step NAME LOGFILE CMD...: runs CMD, appends it to LOGFILE, records rc and seconds
  local name="$1" log="$2"; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  RC[$name]=${PIPESTATUS[0]}
  SECS[$name]=$((SECONDS - t0))
  ORDER+=("$name")
  echo "=== $name: exit ${RC[$name]} after ${SECS[$name]} s" | tee -a "$log"
}
write_status() {
  {
    echo "{"
    local first=1
    for n in "${ORDER[@]}"; do
      [[ $first == 1 ]] || echo ","
      first=0
      printf '  "%s": {"rc": %s, "seconds": %s}' "$n" "${RC[$n]}" "${SECS[$n]}"
    done
    echo ""
    echo "}"
  } > "$OUT/status.json"
}

{
  date -u
  uname -a
  nvidia-smi 2>&1 || true
  nvcc --version 2>&1 || true
  cmake --version 2>&1 | head -1 || true
  "$PY" -c "import sys, torch; print('python', sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  "$PY" -c "import transformers; print('transformers', transformers.__version__)" 2>&1 || true
  git -C "$ROOT" rev-parse HEAD 2>/dev/null || true
  git -C "$ROOT" status --short 2>/dev/null | head -50 || true
} > "$OUT/env.txt" 2>&1

# GoogleTest and Google Benchmark, when bench/gpu_deps.sh fetched them into .gpu_deps (carried):
# unpacked here, and the C++ tests and microbenchmarks are built too.
CPP=0
if compgen -G "$ROOT/.gpu_deps/*.deb" >/dev/null; then
  DEPS=/tmp/dotf-gpu-deps
  for f in "$ROOT"/.gpu_deps/*.deb; do dpkg -x "$f" "$DEPS"; done
  export CMAKE_PREFIX_PATH="$DEPS/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export DOTF_BUILD_TESTS=1 DOTF_BUILD_BENCH=1
  CPP=1
fi

# Build and install (a .so built elsewhere does not load here: other Python and torch).
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export DOTF_CUDA=ON
export PIP_BREAK_SYSTEM_PACKAGES=1  # a system Python may be marked externally managed
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then  # a rerun on the same machine: keep the installed build
  step build "$OUT/build.log" "$PY" -c "import dotf; print('SKIP_BUILD=1: using', dotf.__file__)"
else
  step build "$OUT/build.log" "$PY" -m pip install --no-build-isolation --no-deps -v .
fi
if [[ ${RC[build]} -ne 0 ]]; then
  write_status
  echo "gpu_run: build failed, see $OUT/build.log" >&2
  exit 1
fi

# Import the installed package from outside the source tree, and insist on the CUDA kernels.
step build_info "$OUT/env.txt" bash -c "cd /tmp && '$PY' -c \"import dotf, json; i = dotf.build_info(); print(json.dumps(i, default=str)); assert i['cuda'], 'dotf built without CUDA'\""

# A hung kernel must not eat the session: each test gets PYTEST_TIMEOUT seconds (pytest-timeout).
# Tests run in PYTEST_WORKERS processes (pytest-xdist): a test that crashes its process is reported
# as failed and the others still run; the crashed ones are re-run alone under cuda-gdb (debug.log).
PYTEST_ARGS=(-rfEs -p no:cacheprovider)
if "$PY" -c "import pytest_timeout" 2>/dev/null; then PYTEST_ARGS+=(--timeout "${PYTEST_TIMEOUT:-120}"); fi
if "$PY" -c "import xdist" 2>/dev/null; then PYTEST_ARGS+=(-n "${PYTEST_WORKERS:-4}"); fi
# End to end and CUDA graphs first, then the step benchmark, then the kernel grid: a session cut
# short keeps the most telling results.
step pytest_e2e "$OUT/pytest_e2e.log" "$PY" -m pytest tests/python/model/test_cuda_graphs.py tests/python/model/test_cuda_model.py \
  tests/python/speculative/test_cuda_sampling.py "${PYTEST_ARGS[@]}"
# shellcheck disable=SC2086
step bench "$OUT/gpu_step_bench.log" "$PY" bench/gpu_step_bench.py --out "$OUT/gpu_step_bench.json" ${BENCH_ARGS:-}
if [[ $CPP == 1 ]]; then
  BIN="$(cat "$ROOT/build/LAST")"
  # The CUDA cases of the op and step microbenchmarks (GPU time from CUDA events); console output
  # goes to the step benchmark's log, JSON to dotf_bench.json.
  step cpp_bench "$OUT/gpu_step_bench.log" timeout "${CPP_BENCH_SECONDS:-150}" "$BIN/dotf_bench" \
    --benchmark_filter="${CPP_BENCH_FILTER:-/cuda/}" --benchmark_min_time=0.05 \
    --benchmark_out="$OUT/dotf_bench.json" --benchmark_out_format=json
fi
step pytest_ops "$OUT/pytest_ops.log" "$PY" -m pytest tests/python/ops/test_cuda_ops.py tests/python/ops/test_cuda_sample.py \
  tests/python/ops/test_quant_linear.py tests/python/ops/test_attention_int8_cuda.py \
  tests/python/api/test_build_info.py "${PYTEST_ARGS[@]}"
if [[ $CPP == 1 ]]; then
  step cpp_tests "$OUT/pytest_ops.log" "$(cat "$ROOT/build/LAST")/dotf_tests"
fi
CRASHED=$(grep -ho "worker '[^']*' crashed while running '[^']*'" "$OUT"/pytest_*.log | sed "s/.*running '//; s/'$//" | sort -u)
if [[ -n "$CRASHED" && "${DEBUG_CRASHES:-1}" == 1 ]] && command -v cuda-gdb >/dev/null; then
  for t in $(head -n "${DEBUG_MAX:-2}" <<<"$CRASHED"); do
    step "debug" "$OUT/pytest_e2e.log" timeout 180 cuda-gdb -batch -ex run -ex bt -ex "info threads" --args \
      "$PY" -m pytest -q -p no:cacheprovider "$t"
  done
fi
# dotf's quantized self-draft projected from this run's steps and kernels with the acceptance measured on
# real models on the CPU (bench/README.md, "Quantized self-draft on the GPU"); into the step log.
for ctx in 512 2048; do
  step "projection_$ctx" "$OUT/gpu_step_bench.log" "$PY" bench/gpu_projection.py --gpu "$OUT/gpu_step_bench.json" \
    --context "$ctx" --quant bench/results/quant_draft_acceptance/qwen2.5-coder-1.5b.json=llama2-7b \
    --quant bench/results/quant_draft_acceptance/qwen2.5-coder-1.5b.json=llama2-13b
done
write_status
cat "$OUT/status.json"
for n in "${ORDER[@]}"; do
  [[ ${RC[$n]} -eq 0 ]] || exit 1
done
exit 0
