#!/usr/bin/env bash
# Builds the C++ GoogleTest suite (dotf_tests) with AddressSanitizer + UndefinedBehaviorSanitizer in
# its own build directory (build/asan, separate from the pip/editable build) and runs it.
#
#   bash scripts/sanitize.sh            # configure + build + run; exit status != 0 on any finding
#   DOTF_SANITIZE_JOBS=4 bash scripts/sanitize.sh
#   bash scripts/sanitize.sh --gtest_filter='KVCache*'   # extra args go to dotf_tests
#
# Leak checking is on (detect_leaks=1) and UBSan is fatal (-fno-sanitize-recover=undefined, set by
# CMake), so any finding fails the run. No suppressions are needed (libtorch 2.13, CPU): the
# run is clean as is. Should a libtorch/oneDNN/MKL/OpenMP upgrade start reporting its own
# process-lifetime allocations (thread pools, kernel caches) as leaks, put `leak:<library>` lines in
# scripts/lsan.supp: the script passes that file to LeakSanitizer when it exists. A suppression
# matches any frame of the allocation stack, so keep it to those libraries' own singletons.
# CUDA is off in this build: the GoogleTest suite exercises the CPU code, and ASan does not cover
# device code anyway.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$(command -v python)}"
BUILD="${DOTF_SANITIZE_BUILD_DIR:-build/asan}"
JOBS="${DOTF_SANITIZE_JOBS:-$(nproc)}"
start=$(date +%s)

cmake -S . -B "$BUILD" -G Ninja -DPython_EXECUTABLE="$PY" -DDOTF_SANITIZE=ON -DDOTF_BUILD_TESTS=ON \
  -DDOTF_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" --target dotf_tests -j "$JOBS"
built=$(date +%s)

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:${ASAN_OPTIONS:-}"
if [[ -f scripts/lsan.supp ]]; then
  export LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:${LSAN_OPTIONS:-}"
fi
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
"$BUILD/dotf_tests" "$@"
done_at=$(date +%s)
echo "sanitize.sh: clean (build $((built - start)) s, tests $((done_at - built)) s, total $((done_at - start)) s)"
