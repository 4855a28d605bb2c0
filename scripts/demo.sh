#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then generates with the default model three ways on one prompt:
# plain decoding (ar), dotf (the default), and the paper's method (asd); prints the text once and the speeds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
PY="${DOTF_VENV:-$ROOT/.venv}/bin/python"
PROMPT="${1:-Explain in a short paragraph why the sky is blue.}"
"$PY" - "$PROMPT" <<'PYEOF'
import sys, torch, dotf
torch.set_num_threads(1)
m = dotf.load("smollm2-135m")
chat = [{"role": "user", "content": sys.argv[1]}]
for s in ("ar", "dotf", "asd"):  # warm-up: the int8 draft is built on first use
    m.generate(chat, max_new_tokens=8, strategy=s)
runs = {s: m.generate(chat, max_new_tokens=128, strategy=s) for s in ("ar", "dotf", "asd")}
print(runs["dotf"].text, "\n")
ar, fast, paper = (runs[s].stats["tokens_per_second"] for s in ("ar", "dotf", "asd"))
same = all(r.tokens == runs["ar"].tokens for r in runs.values())
print(f"dotf {fast:.1f} tok/s vs plain decoding {ar:.1f} tok/s: {fast / ar:.2f}x faster, "
      f"{'the same' if same else 'DIFFERENT'} tokens; the paper's method (asd) {paper:.1f} tok/s ({paper / ar:.2f}x) "
      f"[1 thread, {runs['ar'].stats['new_tokens']} tokens]")
PYEOF
