"""Ablations of dotf's options on development prompts (aclsum train, HumanEval's first problems).

    python bench/ablation.py --model smollm2-135m --out bench/results/ablation_smollm2
    python bench/ablation.py --configs "fixed gamma,(default)" --new-tokens 8    # a subset

Each configuration runs after a dotf AR run of the same prompt, interleaved, 1 thread; speedup is
the tok/s ratio to that AR run. Outputs are asserted identical to AR (the lossless contract).
Every selected configuration is warmed up once first (this also builds the int8 draft outside the
timings). Writes ablation.json (every per-prompt figure), table.md and ablation.png into --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import grouped_bar_chart, machine  # noqa: E402
from prompts import encode_prompt, ensure_installed, humaneval_prompts, summarize_prompts  # noqa: E402

import dotf  # noqa: E402
from dotf import defaults  # noqa: E402

TASKS = {"summarize": "aclsum train", "code": "HumanEval's first problems"}
FIXED_GAMMAS = (0.2, 0.4, 0.6, 0.8)  # issue #4: adaptive gamma versus these fixed values
MAX_DRAFTS = (4, 8, 12, 16)          # K_max sweep


def sweeps(prefix: str, base: dict) -> dict:
    """Issue #4's sweeps on top of one strategy's defaults: fixed gamma, then K_max. The sweep keeps
    its default point (K_max=12) so that a --configs subset shows the whole curve; it repeats the
    default configuration, which also shows the run-to-run noise."""
    default_max_draft = defaults(base["strategy"])["max_draft"]
    configs = {f"{prefix} fixed gamma={g}": {**base, "gamma": g, "adaptive_gamma": False} for g in FIXED_GAMMAS}
    for k in MAX_DRAFTS:
        configs[f"{prefix} K_max={k}" + (" (default)" if k == default_max_draft else "")] = {**base, "max_draft": k}
    return configs


CONFIGS = {
    # the paper's draft: threshold sweep, each structural rule off, similarity aggregation
    "asd tau=0.98": {"strategy": "asd", "threshold": 0.98},
    "asd tau=0.985": {"strategy": "asd", "threshold": 0.985},
    "asd tau=0.99 (default)": {"strategy": "asd", "threshold": 0.99},
    "asd tau=0.995": {"strategy": "asd", "threshold": 0.995},
    "asd no keep-first": {"strategy": "asd", "keep_first": 0},
    "asd no budget": {"strategy": "asd", "budget": 1.0},
    "asd last-position similarity": {"strategy": "asd", "similarity": "last"},
    **sweeps("asd", {"strategy": "asd"}),
    # dotf's parts, one at a time then together
    "int8 draft only": {"strategy": "dotf", "lookup": False, "break_even": False},
    "int8 + asd skipping (tau=0.99)": {"strategy": "dotf", "threshold": 0.99, "lookup": False, "break_even": False},
    "int8 + lookup": {"strategy": "dotf", "break_even": False},
    "lookup only (draft=same, no skipping)": {"strategy": "dotf", "draft": "same", "break_even": False},
    "int8 + lookup + break-even (dotf default)": {"strategy": "dotf"},
    "dotf + online re-selection": {"strategy": "dotf", "threshold": 0.99, "reselect_every": 4},
    # cost-aware selection (attention and MLP) instead of the threshold rule
    "int8 + cost selection": {"strategy": "dotf", "selection": "cost", "lookup": False, "break_even": False},
    "dotf + cost selection": {"strategy": "dotf", "selection": "cost"},
    "dotf + cost selection + re-selection": {"strategy": "dotf", "selection": "cost", "reselect_every": 8},
    "same weights + cost selection": {"strategy": "dotf", "draft": "same", "selection": "cost", "lookup": False,
                                      "break_even": False},
    **sweeps("dotf", {"strategy": "dotf"}),
    # dotf's initial gamma (adapted from there, unlike the fixed-gamma sweep); the default is 0.2
    **{f"dotf + adaptive gamma0={g}": {"strategy": "dotf", "gamma": g} for g in (0.1, 0.3, 0.4, 0.6)},
}


def select_configs(spec: str | None) -> dict:
    """The configurations whose names contain any of the comma-separated terms (case-insensitive);
    all of them when spec is None. A term that matches nothing is an error, not a silent no-op."""
    if spec is None:
        return dict(CONFIGS)
    terms = [t.strip().lower() for t in spec.split(",") if t.strip()]
    if not terms:
        raise ValueError("--configs is empty; give a substring or comma-separated names (see --list-configs)")
    unmatched = [t for t in terms if not any(t in name.lower() for name in CONFIGS)]
    if unmatched:
        raise ValueError(f"--configs: no configuration matches {', '.join(map(repr, unmatched))}; "
                         f"known: {'; '.join(CONFIGS)}")
    return {name: kw for name, kw in CONFIGS.items() if any(t in name.lower() for t in terms)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--prompts", type=int, default=1, help="per task (summarize: aclsum train; code: HumanEval)")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default=None,
                    help="run only configurations whose names contain one of these comma-separated substrings")
    ap.add_argument("--list-configs", action="store_true", help="print the configuration names and exit")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        ap.error(f"--tasks must be a comma list of {', '.join(TASKS)}, got {args.tasks!r}")
    args.tasks = tasks
    try:
        args.configs = select_configs(args.configs)
    except ValueError as e:
        ap.error(str(e))
    for name in ("prompts", "new_tokens", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def development_prompts(tokenizer, tasks: list[str], n: int) -> list[tuple[str, list[int]]]:
    """(task, token ids); development splits only (the decode benchmark uses aclsum validation and
    HumanEval's last problems)."""
    ensure_installed()
    prompts = []
    if "summarize" in tasks:
        prompts += [("summarize", encode_prompt(tokenizer, p, chat=True))
                    for p in summarize_prompts(n, split="train")]
    if "code" in tasks:
        prompts += [("code", encode_prompt(tokenizer, p, chat=False)) for p in humaneval_prompts(n)]
    return prompts


def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def markdown(rows: dict, args, n_prompts: int) -> str:
    lines = [f"model {args.model}, {args.new_tokens} new tokens, {n_prompts} development prompts "
             f"({', '.join(args.tasks)}), {args.threads} thread(s)", "",
             "| configuration | speedup vs AR (median) | acceptance | mean accepted length | attention skipped "
             "| MLP skipped | cost model: predicted / measured acceptance of its plan |",
             "|---|---|---|---|---|---|---|"]
    for name, rs in rows.items():
        predicted = [r for r in rs if r.get("predicted") is not None and r.get("plan_acceptance", -1) >= 0]
        check = (f"{median_of(predicted, 'predicted'):.2f} / {median_of(predicted, 'plan_acceptance'):.2f}"
                 if predicted else "–")
        lines.append(f"| {name} | {median_of(rs, 'speedup'):.2f}x | {median_of(rs, 'acceptance'):.2f} | "
                     f"{median_of(rs, 'mean_accepted'):.2f} | {median_of(rs, 'skipped'):.0f} | "
                     f"{median_of(rs, 'skipped_mlp'):.0f} | {check} |")
    return "\n".join(lines) + "\n"


def plot(rows: dict, tasks: list[str], path: Path) -> None:
    """Median speedup per configuration, one bar per task, each labelled with its median acceptance."""
    names = list(rows)
    speedups, labels = {}, {}
    for task in tasks:
        per_config = [[r for r in rows[name] if r["task"] == task] for name in names]
        speedups[task] = [median_of(rs, "speedup") if rs else None for rs in per_config]
        labels[task] = [f"acc {median_of(rs, 'acceptance'):.2f}" if rs else "" for rs in per_config]
    grouped_bar_chart(path, names, speedups, "speedup vs dotf AR (tok/s ratio, median)", bar_labels=labels)


def main(argv=None):
    args = parse_args(argv)
    configs = args.configs
    if args.list_configs:
        print("\n".join(f"{name}: {kw}" for name, kw in configs.items()))
        return
    torch.set_num_threads(args.threads)
    m = dotf.load(args.model)
    prompts = development_prompts(m.tokenizer, args.tasks, args.prompts)
    for kw in configs.values():  # warm-up; builds the int8 draft once, a one-time load cost
        m.generate(prompts[0][1][:8], max_new_tokens=2, **kw)
    rows = {name: [] for name in configs}
    for task, ids in prompts:
        for name, kw in configs.items():
            ar = m.generate(ids, max_new_tokens=args.new_tokens, strategy="ar")
            r = m.generate(ids, max_new_tokens=args.new_tokens, **kw)
            assert r.tokens == ar.tokens, name
            s = r.stats
            rows[name].append({"task": task, "speedup": s["tokens_per_second"] / ar.stats["tokens_per_second"],
                               "acceptance": s["acceptance_rate"], "mean_accepted": s["mean_accepted_length"],
                               "skipped": len(s["skipped_attention_layers"]),
                               "skipped_mlp": len(s["skipped_mlp_layers"]), "final_gamma": s["final_gamma"],
                               "predicted": s.get("predicted_acceptance"), "plan_acceptance": s.get("plan_acceptance")})
            print(f"{task:9s} {name:45s} {rows[name][-1]['speedup']:.2f}x", flush=True)
    md = markdown(rows, args, len(prompts))
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.json").write_text(json.dumps(
            {"machine": machine(), "model": args.model, "new_tokens": args.new_tokens, "configs": configs,
             "rows": rows}, indent=1))
        (out / "table.md").write_text(md)
        plot(rows, args.tasks, out / "ablation.png")


if __name__ == "__main__":
    main()
