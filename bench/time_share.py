"""Where the time of a decode step goes, and what that predicts for speculative decoding.

    python bench/time_share.py --model smollm2-135m --contexts 128,512,2048 --out bench/results/time_share_smollm2

For each context length: the median time of a full decode step, of a step without any attention
sublayer, without any MLP sublayer and without the LM head; the differences are each part's share.
Then the cost c of a draft step for the draft plans dotf uses (relative to a full step) and the cost
v(k) of verifying k+1 tokens. With acceptance p measured on real prompts (run generate), the
standard formula E = (1 - p^(k+1)) / (1 - p) tokens per round at a cost k*c + v(k) predicts the
speedup; the measured speedup (tokens/s ratio vs AR on the same prompts) is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, task_prompts  # noqa: E402

import dotf  # noqa: E402


def step_time(m, cache, ctx, tokens=1, reps=7, **forward_kw) -> float:
    """Median seconds of one forward of `tokens` new tokens at context ctx (cache rolled back each time)."""
    times = []
    for _ in range(reps):
        cache.truncate(ctx)
        t0 = time.perf_counter()
        m.forward(list(range(100, 100 + tokens)), ctx, cache, **forward_kw)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shares(m, cache, ctx) -> dict:
    L = m.num_layers
    on, off = [True] * L, [False] * L
    full = step_time(m, cache, ctx, logits="last")
    no_attn = step_time(m, cache, ctx, attention=off, logits="last")
    no_mlp = step_time(m, cache, ctx, mlp=off, logits="last")
    no_head = step_time(m, cache, ctx, logits="none")
    bare = step_time(m, cache, ctx, attention=off, mlp=off, logits="none")
    return {"full_ms": 1e3 * full, "attention": (full - no_attn) / full, "mlp": (full - no_mlp) / full,
            "lm_head": (full - no_head) / full, "other": bare / full, "_on": on}


def predicted_speedup(p: float, k: int, c: float, v: float) -> float:
    expected = (1 - p ** (k + 1)) / (1 - p) if p < 1 else k + 1
    return expected / (k * c + v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--contexts", default="128,512,2048")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--linear-path", default="auto")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per task for measured acceptance")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = dotf.load(args.model, linear_path=args.linear_path)
    contexts = [int(c) for c in args.contexts.split(",")]
    cache = m.new_cache(max(contexts) + 16)
    L = m.num_layers

    # Acceptance and draft plans measured on real prompts (summaries and code).
    runs = {"asd": {"strategy": "asd"}, "int8": {"strategy": "dotf", "lookup": False, "break_even": False}}
    measured = {}
    for task in ("summarize", "code"):
        for pid, ids in task_prompts(m.tokenizer, task, args.prompts):
            ar = m.generate(ids, max_new_tokens=args.new_tokens, strategy="ar")
            for name, kw in runs.items():
                r = m.generate(ids, max_new_tokens=args.new_tokens, **kw)
                assert r.tokens == ar.tokens
                measured.setdefault(name, []).append({
                    "task": task, "prompt": pid, "acceptance": r.stats["acceptance_rate"],
                    "mean_draft": r.stats["drafted"] / max(r.stats["rounds"], 1),
                    "skipped": r.stats["skipped_attention_layers"],
                    "speedup": r.stats["tokens_per_second"] / ar.stats["tokens_per_second"]})

    results = {"meta": {"model": args.model, "linear_path": args.linear_path, "machine": machine()},
               "contexts": {}}
    for ctx in contexts:
        m.forward(list(range(10, 10 + ctx)), 0, cache, logits="none")  # a context of exactly ctx tokens
        sh = shares(m, cache, ctx)
        on = sh.pop("_on")
        full = sh["full_ms"] / 1e3
        entry = {"shares": sh, "verify_cost": {}, "draft_cost": {}, "prediction": {}}
        for k in range(0, 13):
            entry["verify_cost"][k] = step_time(m, cache, ctx, tokens=k + 1, logits="all") / full
        for name, runs_ in measured.items():
            skipped = runs_[0]["skipped"]  # plan of the first prompt: representative
            attention = [i not in skipped for i in range(L)]
            weights = "int8" if name == "int8" else "same"
            c = step_time(m, cache, ctx, attention=attention, mlp=on, logits="last", weights=weights) / full
            entry["draft_cost"][name] = {"skipped_attention": len(skipped), "cost": c}
            p = statistics.mean(r["acceptance"] for r in runs_)
            k = max(1, round(statistics.mean(r["mean_draft"] for r in runs_)))
            entry["prediction"][name] = {
                "acceptance": p, "k": k, "predicted_speedup": predicted_speedup(p, k, c, entry["verify_cost"][k]),
                "measured_speedup": statistics.median(r["speedup"] for r in runs_)}
        results["contexts"][ctx] = entry
        print(f"ctx {ctx}: step {sh['full_ms']:.1f} ms  attention {sh['attention']:.0%}  mlp {sh['mlp']:.0%}  "
              f"lm_head {sh['lm_head']:.0%}  other {sh['other']:.0%}", flush=True)
        print("  verify(k)/step: " + " ".join(f"{k}:{v:.2f}" for k, v in entry["verify_cost"].items()))
        for name, pred in entry["prediction"].items():
            print(f"  {name}: draft step {entry['draft_cost'][name]['cost']:.2f} of a full step "
                  f"({entry['draft_cost'][name]['skipped_attention']} attention skipped), p={pred['acceptance']:.2f}, "
                  f"k={pred['k']}: predicted {pred['predicted_speedup']:.2f}x, measured "
                  f"{pred['measured_speedup']:.2f}x (at the prompts' own context)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Not with_suffix: a name like time_share_qwen0.5b would lose its ".5b".
        (out if out.suffix == ".json" else out.parent / (out.name + ".json")).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
