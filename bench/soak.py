"""Soak test: many consecutive short generations on the real SmolLM2-135M, watching resident memory.

    python bench/soak.py --out bench/results/soak.json            # 1,000 generations, ~minutes
    python bench/soak.py --n 200 --warmup 20 --out /tmp/soak.json # quicker

Strategies cycle ar / asd / dotf over short prompts with small max_new_tokens, so that per-call
state (KV caches, stats, the int8 draft, callbacks, speculative bookkeeping) is created and dropped
thousands of times. RSS is read (psutil when installed, else /proc/self/status VmRSS) after a
warm-up (allocator pools, the int8 draft, lazily built kernels all exist by then) and at the end;
growth above --max-growth percent exits with status 1. Every speculative result is also checked
against the AR tokens of the same prompt.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

TEXTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "import numpy as np\n",
    "Water boils at",
    "Q: What is 12 times 7?\nA:",
    "The quick brown fox",
    "In machine learning, overfitting means",
    "for i in range(10):",
    "My favourite season is",
    "The sun rises in the",
]
STRATEGIES = ("ar", "asd", "dotf")


def rss_bytes() -> int:
    try:
        import psutil  # noqa: PLC0415
        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read resident memory (no psutil, no /proc/self/status)")


def rss_now() -> int:
    gc.collect()
    return rss_bytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="checkpoint directory or built-in name")
    ap.add_argument("--n", type=int, default=1000, help="generations after the warm-up")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--sample-every", type=int, default=50, help="record RSS every this many generations")
    ap.add_argument("--max-growth", type=float, default=1.0, help="fail (exit 1) above this RSS growth, percent")
    ap.add_argument("--out", type=Path, required=True, help="JSON results file")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import dotf  # noqa: PLC0415
    from common import machine  # noqa: PLC0415

    rss_start = rss_now()
    model = dotf.load(args.model)
    tok = model.tokenizer
    prompts = [tok(t)["input_ids"] for t in TEXTS] if tok is not None else \
        [list(range(100 + 7 * i, 110 + 9 * i)) for i in range(len(TEXTS))]
    reference: dict[int, list[int]] = {}
    mismatches, tokens_out, streamed = [], 0, []

    def one(i: int) -> None:
        nonlocal tokens_out
        p = i % len(prompts)
        strategy = STRATEGIES[(i // len(prompts) + i) % len(STRATEGIES)]
        streamed.clear()
        res = model.generate(prompts[p], max_new_tokens=args.max_new_tokens, strategy=strategy,
                             on_tokens=streamed.extend if i % 2 else None)
        tokens_out += len(res.tokens)
        if strategy == "ar":
            reference.setdefault(p, res.tokens)
        elif p in reference and res.tokens != reference[p]:
            mismatches.append({"i": i, "prompt": p, "strategy": strategy})

    for i in range(len(prompts)):  # AR references first, so that every speculative call is checked
        reference[i] = model.generate(prompts[i], max_new_tokens=args.max_new_tokens).tokens
    for i in range(args.warmup):
        one(i)
    rss_warm = rss_now()
    trace = [(0, rss_warm)]
    t0 = time.perf_counter()
    for i in range(args.n):
        one(args.warmup + i)
        if (i + 1) % args.sample_every == 0:
            trace.append((i + 1, rss_now()))
    seconds = time.perf_counter() - t0
    rss_end = rss_now()
    growth = 100.0 * (rss_end - rss_warm) / rss_warm

    mb = 1 / (1 << 20)
    result = {
        "model": args.model, "generations": args.n, "warmup": args.warmup,
        "max_new_tokens": args.max_new_tokens, "strategies": list(STRATEGIES),
        "rss_before_load_mb": round(rss_start * mb, 1), "rss_after_warmup_mb": round(rss_warm * mb, 1),
        "rss_end_mb": round(rss_end * mb, 1), "growth_percent": round(growth, 3),
        "max_growth_percent": args.max_growth, "passed": growth < args.max_growth and not mismatches,
        "rss_trace_mb": [(i, round(r * mb, 1)) for i, r in trace],
        "seconds": round(seconds, 1), "generations_per_second": round(args.n / seconds, 2),
        "new_tokens": tokens_out, "mismatches_vs_ar": mismatches, "draft_bytes": model.draft_bytes,
        "rss_source": "psutil" if "psutil" in sys.modules else "/proc/self/status",
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.n} generations in {seconds:.0f} s: RSS {result['rss_after_warmup_mb']} MB after warm-up -> "
          f"{result['rss_end_mb']} MB at the end ({growth:+.2f}%, limit {args.max_growth}%); "
          f"{len(mismatches)} speculative results differ from AR")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
