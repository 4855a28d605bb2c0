"""Packed weights on transparent huge pages versus ordinary pages (csrc/core/memory.h).

    python bench/huge_pages.py --model smollm2-135m --out bench/results/huge_pages_smollm2.json

Loads the model twice in one process, once with DOTF_HUGE_PAGES=0 (ordinary 4 KiB pages) and once
with huge pages, then alternates between the two: single forward steps at one context (an AR step,
an int8 draft step, a verify of 7 tokens) and whole generate calls (ar and dotf on real prompts),
so the shared machine's drift hits both alike. Reports medians and the on/off ratio of each.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, task_prompts  # noqa: E402

import dotf  # noqa: E402

STEPS = {"ar_step": (1, "same"), "int8_draft_step": (1, "int8"), "verify_7": (7, "same")}


def load(model: str, huge_pages: bool):
    os.environ["DOTF_HUGE_PAGES"] = "1" if huge_pages else "0"  # read when the weights are packed
    m = dotf.load(model)
    m.forward([100], 0, m.new_cache(8), weights="int8")  # packs the int8 draft now, under this setting
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--context", type=int, default=300)
    ap.add_argument("--step-reps", type=int, default=40)
    ap.add_argument("--tasks", default="summarize,code,chat")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    models = {"off": load(args.model, False), "on": load(args.model, True)}
    os.environ.pop("DOTF_HUGE_PAGES")
    info = {"meta": {"model": args.model, "context": args.context, "machine": machine(),
                     "transparent_huge_pages": dotf.build_info()["transparent_huge_pages"]}}

    ids = torch.randint(100, 20000, (args.context + 8,), generator=torch.Generator().manual_seed(0)).tolist()
    caches = {}
    for name, m in models.items():
        caches[name] = m.new_cache(args.context + 8)
        m.forward(ids[:args.context], 0, caches[name], logits="last")
    steps = {(k, name): [] for k in STEPS for name in models}
    for _ in range(args.step_reps):
        for name, m in models.items():
            for key, (tokens, weights) in STEPS.items():
                t0 = time.perf_counter()
                m.forward(ids[args.context:args.context + tokens], args.context, caches[name], weights=weights)
                steps[(key, name)].append(time.perf_counter() - t0)
                caches[name].truncate(args.context)

    calls = {}
    for task in args.tasks.split(","):
        for _, prompt in task_prompts(models["on"].tokenizer, task, args.prompts):
            for strategy in ("ar", "dotf"):
                tokens = None
                for name, m in models.items():
                    r = m.generate(prompt, max_new_tokens=args.new_tokens, strategy=strategy)
                    assert tokens is None or r.tokens == tokens, "huge pages changed the output"
                    tokens = r.tokens
                    s = r.stats
                    calls.setdefault((task, strategy, name), []).append(
                        (s["seconds"], s["seconds"] - s["prefill_seconds"]))

    rows = {}
    for key in STEPS:
        off, on = (statistics.median(steps[(key, n)]) for n in ("off", "on"))
        rows[key] = {"off_ms": off * 1e3, "on_ms": on * 1e3, "on_over_off": on / off}
    for task, strategy in dict.fromkeys((t, s) for t, s, _ in calls):  # in run order
        tot = {n: sum(c[0] for c in calls[(task, strategy, n)]) for n in ("off", "on")}
        dec = {n: sum(c[1] for c in calls[(task, strategy, n)]) for n in ("off", "on")}
        rows[f"{task}/{strategy}"] = {"off_s": tot["off"], "on_s": tot["on"], "on_over_off": tot["on"] / tot["off"],
                                      "decode_on_over_off": dec["on"] / dec["off"]}
    info["results"] = rows
    for key, row in rows.items():
        print(f"{key:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
