#!/usr/bin/env bash
# One GPU session, offline: build dotf with its CUDA kernels, run the CUDA tests, time the steps.
#
#   bench/gpu_run.sh OUTDIR
#
# Expects the H100 machine's environment (see /work/shared/notes/build.md): python3 with torch
# (+cu130), nvcc 13, CMake >= 3.26, ninja, pybind11, transformers, safetensors; no internet.
# Writes to OUTDIR: env.txt, build.log, pytest_ops.log/.xml, pytest_e2e.log/.xml,
# gpu_step_bench.json/.log, status.json (each step's exit code and seconds). Runs every step even
# when an earlier one fails (except that nothing runs without a successful build); exits non-zero
# when any step failed.
# Knobs: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0), DOTF_JOBS,
# BENCH_ARGS (extra arguments for gpu_step_bench.py, e.g. "--contexts 512 --iters 10").
set -uo pipefail

OUT="${1:?usage: bench/gpu_run.sh OUTDIR}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"

declare -A RC SECS
ORDER=()
step() {  # step NAME LOGFILE CMD...: runs CMD, tees it into LOGFILE, records rc and seconds
  local name="$1" log="$2"; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee "$log"
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

# Build and install (a .so built elsewhere does not load here: other Python and torch).
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export DOTF_CUDA=ON
export PIP_BREAK_SYSTEM_PACKAGES=1  # a system Python may be marked externally managed
step build "$OUT/build.log" "$PY" -m pip install --no-build-isolation --no-deps -v .
if [[ ${RC[build]} -ne 0 ]]; then
  write_status
  echo "gpu_run: build failed, see $OUT/build.log" >&2
  exit 1
fi

# Import the installed package from outside the source tree, and insist on the CUDA kernels.
step build_info "$OUT/build_info.log" bash -c "cd /tmp && '$PY' -c \"import dotf, json; i = dotf.build_info(); print(json.dumps(i, default=str)); assert i['cuda'], 'dotf built without CUDA'\""

step pytest_ops "$OUT/pytest_ops.log" "$PY" -m pytest tests/test_cuda_ops.py -q -rfEs -p no:cacheprovider \
  --junitxml="$OUT/pytest_ops.xml"
step pytest_e2e "$OUT/pytest_e2e.log" "$PY" -m pytest tests/test_cuda_e2e.py -q -rfEs -p no:cacheprovider \
  --junitxml="$OUT/pytest_e2e.xml"
# shellcheck disable=SC2086
step bench "$OUT/gpu_step_bench.log" "$PY" bench/gpu_step_bench.py --out "$OUT/gpu_step_bench.json" ${BENCH_ARGS:-}

write_status
cat "$OUT/status.json"
for n in "${ORDER[@]}"; do
  [[ ${RC[$n]} -eq 0 ]] || exit 1
done
exit 0
