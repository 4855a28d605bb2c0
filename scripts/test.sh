#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs all tests: pytest, then the C++ GoogleTest suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
VENV="${DOTF_VENV:-$ROOT/.venv}"
"$VENV/bin/python" -m pytest -q tests "$@"
"$VENV/bin/ctest" --test-dir "$(cat build/LAST)" --output-on-failure
