"""Ablations of dotf's options on development prompts (aclsum train, HumanEval's first problems).

    python bench/ablation.py --model smollm2-135m --out bench/results/ablation_smollm2

Each configuration runs after a dotf AR run of the same prompt, interleaved, 1 thread; speedup is
the tok/s ratio to that AR run. Outputs are asserted identical to AR (the lossless contract).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import dotf  # noqa: E402
from dotf import data  # noqa: E402

CONFIGS = {
    # the paper's draft: threshold sweep, each structural rule off, K_max, similarity aggregation
    "asd tau=0.98": {"strategy": "asd", "threshold": 0.98},
    "asd tau=0.985": {"strategy": "asd", "threshold": 0.985},
    "asd tau=0.99 (default)": {"strategy": "asd", "threshold": 0.99},
    "asd tau=0.995": {"strategy": "asd", "threshold": 0.995},
    "asd no keep-first": {"strategy": "asd", "keep_first": 0},
    "asd no budget": {"strategy": "asd", "budget": 1.0},
    "asd K_max=4": {"strategy": "asd", "max_draft": 4},
    "asd last-position similarity": {"strategy": "asd", "similarity": "last"},
    # dotf's parts, one at a time then together
    "int8 draft only": {"strategy": "dotf", "lookup": False, "break_even": False},
    "int8 + asd skipping (tau=0.99)": {"strategy": "dotf", "threshold": 0.99, "lookup": False, "break_even": False},
    "int8 + lookup": {"strategy": "dotf", "break_even": False},
    "lookup only (draft=same, no skipping)": {"strategy": "dotf", "draft": "same", "break_even": False},
    "int8 + lookup + break-even (dotf default)": {"strategy": "dotf"},
    "dotf + online re-selection": {"strategy": "dotf", "threshold": 0.99, "reselect_every": 4},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=1, help="per task (summarize: aclsum train; code: HumanEval)")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = dotf.load(args.model)
    tok = m.tokenizer
    data.ensure_installed()
    prompts = [data.encode_prompt(tok, p, chat=True) for p in data.summarize_prompts(args.prompts, split="train")]
    prompts += [data.encode_prompt(tok, p, chat=False) for p in data.humaneval_prompts(args.prompts)]
    rows = {name: [] for name in CONFIGS}
    for ids in prompts:
        for name, kw in CONFIGS.items():
            ar = m.generate(ids, max_new_tokens=args.new_tokens)
            r = m.generate(ids, max_new_tokens=args.new_tokens, **kw)
            assert r.tokens == ar.tokens, name
            s = r.stats
            rows[name].append({"speedup": s["tokens_per_second"] / ar.stats["tokens_per_second"],
                               "acceptance": s["acceptance_rate"], "mean_accepted": s["mean_accepted_length"],
                               "skipped": len(s["skipped_attention_layers"])})
    lines = [f"model {args.model}, {args.new_tokens} new tokens, {len(prompts)} development prompts, "
             f"{args.threads} thread(s)", "",
             "| configuration | speedup vs AR (median) | acceptance | mean accepted length | attention skipped |",
             "|---|---|---|---|---|"]
    for name, rs in rows.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        lines.append(f"| {name} | {med('speedup'):.2f}x | {med('acceptance'):.2f} | {med('mean_accepted'):.2f} | "
                     f"{med('skipped'):.0f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
        (out / "table.md").write_text(md)


if __name__ == "__main__":
    main()
