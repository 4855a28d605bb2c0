#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and generates with the default real model, AR then ASD.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
PY="${DOTF_VENV:-$ROOT/.venv}/bin/python"
PROMPT="${1:-Summarize in two sentences why the sky is blue.}"
for strategy in ar asd; do
  "$PY" -m dotf generate --model smollm2-135m --strategy "$strategy" --max-new-tokens 96 --prompt "$PROMPT"
done
