"""Long contexts: decode speed of ar, asd and dotf (its draft reading the exact KV cache or the int8
mirror, through a window or not) on held-out prompts of 1k-8k tokens, and what one pass costs as the
context grows.

    flock /tmp/dotf-bench.lock python bench/long_context.py --model smollm2-135m \\
        --contexts 1024,2048,4096,8192 --out bench/results/long-context-smollm2

Methods are named strategy[_kv8|_kvx][_w<N>][_k<K>][_c][_ls|_nl|_nc][_sc][_r<N>] (method_options). Options are tuned on development prompts
(--split dev: ACLSum train/validation papers, other HumanEval problems, other ShareGPT chats) and reported
on held-out ones (--split test, the default).

Context C: a prompt of C - new_tokens tokens (bench/prompts.py long_prompt: several ACLSum test papers to
summarize, a file of HumanEval solutions plus the next problem, a long ShareGPT conversation), so that
prompt and output fill C positions (SmolLM2 has 8192). Every method's tokens are compared with dotf AR's
(float32: the lossless contract holds there too). Each cell is one generate call, its prefill included and
reported apart: decode tok/s leaves it out, end-to-end tok/s does not.

Step costs: one full-model step, one verify pass of 9 rows, and one dotf draft step (int8 weights, every sublayer: the dotf preset's
draft) over the exact rows and over the int8 mirror, timed with the low-level forward over a cache of C
random rows (the cost of attention does not depend on the values), median of --step-repeats.
Writes results.json, table.md and long_context.png (matplotlib permitting) into --out.
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
import prompts  # noqa: E402
from common import machine  # noqa: E402

import dotf  # noqa: E402

# A method is a strategy and generate() options, named as METHOD_GRAMMAR says: "_kv8" drafts over the int8
# mirror (draft_kv="int8"), "_kvx" over the exact cache (draft_kv="same"), neither: the strategy's default
# (dotf's "auto" chooses by the context's size; asd reads the exact cache), "_w<N>" through an N-key window
# (draft_window=N), "_k<K>" drafts at most K tokens a round (max_draft=K), "_c" caps each round where the
# measured costs say (cost_draft_length=True), "_ls" looks up at round starts only, "_nl" not at all, "_nc"
# sends lookups to the verify unchecked (lookup_check=False), "_sc" chooses the draft's sublayers by dotf's
# cost model (selection="cost"), "_r<N>" re-selects them from the verify passes' similarities every N rounds
# (reselect_every=N).
# Results written before draft_kv="auto" existed name the exact cache without a suffix (their table.md says).
METHOD_GRAMMAR = "ar | (asd|dotf)[_kv8|_kvx][_w<N>][_k<K>][_c][_ls|_nl|_nc][_sc][_r<N>]"


def method_options(name: str) -> tuple[str, dict]:
    """(strategy, generate() options) of a method name (METHOD_GRAMMAR)."""
    strategy, *parts = name.split("_")
    if strategy == "ar" and not parts:
        return "ar", {}
    if strategy not in ("asd", "dotf"):
        raise ValueError(f"unknown method {name!r}: {METHOD_GRAMMAR}")
    options = {}  # draft_kv: the strategy's default (dotf: "auto") unless _kv8 or _kvx says
    for part in parts:
        if part == "kv8":
            options["draft_kv"] = "int8"
        elif part == "kvx":  # the exact cache
            options["draft_kv"] = "same"
        elif part == "c":
            options["cost_draft_length"] = True
        elif part == "ls":  # lookup at the start of a round only
            options["lookup_every_step"] = False
        elif part == "nl":
            options["lookup"] = False
        elif part == "nc":  # lookup proposals go to the verify unchecked
            options["lookup_check"] = False
        elif part == "sc":  # sublayers chosen by the cost model
            options["selection"] = "cost"
        elif part[:1] in ("w", "k", "r") and part[1:].isdigit():
            options[{"w": "draft_window", "k": "max_draft", "r": "reselect_every"}[part[0]]] = int(part[1:])
        else:
            raise ValueError(f"unknown method {name!r}: {METHOD_GRAMMAR}")
    return strategy, options

# step -> (label, rows, forward() arguments): the full model's step, a verify pass of 9 rows (8 drafts, the
# dotf preset's max_draft), dotf's draft step over the exact rows, over the mirror, and over the mirror
# through a 1024-key window (draft_window)
VERIFY_ROWS = 9
STEPS = {"full": ("full step", 1, {}), "verify": (f"verify, {VERIFY_ROWS} rows", VERIFY_ROWS, {}),
         "draft": ("draft, exact KV", 1, {"weights": "int8"}),
         "draft_kv8": ("draft, int8 KV", 1, {"weights": "int8", "kv": "int8"}),
         "draft_kv8_w1024": ("draft, int8 KV, window 1024", 1, {"weights": "int8", "kv": "int8", "window": 1024})}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--contexts", default="1024,2048,4096,8192")
    p.add_argument("--kinds", default=",".join(prompts.LONG_KINDS))
    p.add_argument("--methods", default="ar,asd,dotf,dotf_kv8,dotf_kv8_w1024", help=METHOD_GRAMMAR)
    p.add_argument("--split", default="test", choices=prompts.LONG_SPLITS,
                   help="held-out prompts (test: what is reported) or development ones (dev: what is tuned on)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--step-contexts", default="300,512,1024,2048,4096,8128")
    p.add_argument("--step-repeats", type=int, default=30)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def run_cell(model, method: str, ids: list[int], new_tokens: int) -> dict:
    strategy, options = method_options(method)
    res = model.generate(ids, max_new_tokens=new_tokens, strategy=strategy, **options)
    s = res.stats
    decode = s["seconds"] - s["prefill_seconds"]
    rec = {"method": method, "tokens": res.tokens, "seconds": s["seconds"], "prefill_seconds": s["prefill_seconds"],
           "decode_tokens_per_second": len(res.tokens) / decode, "tokens_per_second": len(res.tokens) / s["seconds"],
           "kv_cache_bytes": s["kv_cache_bytes"], "kv_mirror_bytes": s["kv_mirror_bytes"]}
    if strategy != "ar":
        model_drafted = s["drafted_by_source"]["model"]
        rec.update(acceptance_rate=s["acceptance_rate"], mean_accepted_length=s["mean_accepted_length"],
                   draft_seconds=s["draft_seconds"], verify_seconds=s["verify_seconds"], rounds=s["rounds"],
                   model_drafted=model_drafted, draft_kv=s["draft_kv"], draft_window=s["draft_window"],
                   draft_ms_per_model_token=1e3 * s["draft_seconds"] / model_drafted if model_drafted else None,
                   skipped_attention=len(s["skipped_attention_layers"]), skipped_mlp=len(s["skipped_mlp_layers"]))
    return rec


def step_costs(model, contexts: list[int], repeats: int) -> list[dict]:
    """Milliseconds of one step per STEPS entry at each context (median of repeats)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in contexts:
        cache = model.new_cache(n + VERIFY_ROWS)
        cache.append(n)
        for layer in range(model.num_layers):
            for slab in (cache.keys(layer), cache.values(layer)):
                slab[:n] = torch.randn(slab[:n].shape, generator=g, dtype=slab.dtype)
        cache.add_int8_mirror()
        row = {"context": n}
        for name, (_, step_rows, kw) in STEPS.items():
            times = []
            for _ in range(repeats + 2):  # two warm-ups
                t0 = time.perf_counter()
                model.forward([17] * step_rows, n, cache, logits="all" if step_rows > 1 else "last", **kw)
                times.append(time.perf_counter() - t0)
            row[f"{name}_ms"] = 1e3 * statistics.median(times[2:])
        print(f"[steps] context {n}: " + ", ".join(f"{k} {row[f'{k}_ms']:.2f} ms" for k in STEPS), file=sys.stderr)
        rows.append(row)
    return rows


def summarize(records: list[dict], methods: list[str]) -> list[dict]:
    """Per (context, method): mean over kinds of decode and end-to-end tok/s, speedups vs AR, exactness."""
    table = []
    for context in sorted({r["context"] for r in records}):
        cell = {m: [r for r in records if r["context"] == context and r["method"] == m] for m in methods}
        mean = lambda m, k: statistics.mean(r[k] for r in cell[m])  # noqa: E731
        for m in methods:
            e = {"context": context, "method": m, "prompts": len(cell[m]),
                 "decode_tokens_per_second": mean(m, "decode_tokens_per_second"),
                 "tokens_per_second": mean(m, "tokens_per_second"), "prefill_seconds": mean(m, "prefill_seconds"),
                 "exact": all(r["exact"] for r in cell[m])}
            if "ar" in cell:
                e["decode_speedup"] = e["decode_tokens_per_second"] / mean("ar", "decode_tokens_per_second")
                e["speedup"] = e["tokens_per_second"] / mean("ar", "tokens_per_second")
            if m != "ar":
                e["acceptance_rate"] = mean(m, "acceptance_rate")
                e["mean_accepted_length"] = mean(m, "mean_accepted_length")
                per_token = [r["draft_ms_per_model_token"] for r in cell[m] if r["draft_ms_per_model_token"]]
                e["draft_ms_per_model_token"] = statistics.mean(per_token) if per_token else None
            table.append(e)
    return table


def markdown(table: list[dict], steps: list[dict], records: list[dict], meta: dict) -> str:
    m = meta["machine"]
    fmt = lambda v, f="{:.2f}": "–" if v is None else f.format(v)  # noqa: E731
    lines = [f"model {meta['model']}, float32, {meta['new_tokens']} new tokens, {m['threads']} thread(s), "
             f"{m['cpu']} ({' '.join(m['cpu_features'])}); kinds: {', '.join(meta['kinds'])}, one "
             f"{'development' if meta.get('split') == 'dev' else 'held-out'} prompt each per context", "",
             "| context | method | decode tok/s | decode vs AR | end-to-end tok/s | vs AR | prefill s | acceptance "
             "| mean accepted len | draft ms / model token | exact |", "|" + "---|" * 11]
    for e in table:
        lines.append(f"| {e['context']} | {e['method']} | {e['decode_tokens_per_second']:.1f} | "
                     f"{fmt(e.get('decode_speedup'))}x | {e['tokens_per_second']:.2f} | {fmt(e.get('speedup'))}x | "
                     f"{e['prefill_seconds']:.1f} | {fmt(e.get('acceptance_rate'))} | "
                     f"{fmt(e.get('mean_accepted_length'))} | {fmt(e.get('draft_ms_per_model_token'))} | "
                     f"{'yes' if e['exact'] else 'NO'} |")
    lines += ["", "Means over the kinds. decode: prefill excluded; end-to-end: prefill included (one prefill per "
              "call). exact: tokens equal dotf AR's on every prompt. Methods: strategy, then _kv8: draft_kv='int8', "
              "_kvx: draft_kv='same' (else the strategy's default: dotf 'auto', asd 'same'; draft_kv / draft_window "
              "as run are in results.json), _w<N>: draft_window=N, _k<K>: max_draft=K, _c: cost_draft_length=True, "
              "_ls: lookup_every_step=False, _nl: lookup=False, _nc: lookup_check=False, _sc: selection='cost', "
              "_r<N>: reselect_every=N."]
    drafts = [k for k in STEPS if k not in ("full", "verify")]
    if steps:
        lines += ["", "One pass, ms (median); in brackets the verify's cost relative to the full step at the same "
                  f"context, and each draft step's relative to its own at {steps[0]['context']} tokens.", "",
                  "| context | " + " | ".join(STEPS[k][0] for k in STEPS) + " |", "|" + "---|" * (1 + len(STEPS))]
    for s in steps:
        lines.append(f"| {s['context']} | {s['full_ms']:.2f} | {s['verify_ms']:.2f} ({s['verify_ms'] / s['full_ms']:.2f}x) | "
                     + " | ".join(f"{s[f'{k}_ms']:.2f} ({s[f'{k}_ms'] / steps[0][f'{k}_ms']:.2f}x)" for k in drafts)
                     + " |")
    lines += ["", "Per cell (kind, context): seconds of the whole call (prefill seconds), decode tok/s.", "",
              "| context | kind | " + " | ".join(meta["methods"]) + " |", "|" + "---|" * (2 + len(meta["methods"]))]
    for context in meta["contexts"]:
        for kind in meta["kinds"]:
            cells = {r["method"]: r for r in records if r["context"] == context and r["kind"] == kind}
            lines.append(f"| {context} | {kind} | " + " | ".join(
                f"{cells[x]['seconds']:.1f} s ({cells[x]['prefill_seconds']:.1f}), "
                f"{cells[x]['decode_tokens_per_second']:.1f}" for x in meta["methods"]) + " |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict], steps: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipped {path}", file=sys.stderr)
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for method in sorted({e["method"] for e in table} - {"ar"}):
        rows = [e for e in table if e["method"] == method]
        a.plot([e["context"] for e in rows], [e["decode_speedup"] for e in rows], marker="o", label=method)
    a.axhline(1.0, color="k", lw=0.8)
    a.set(xscale="log", xlabel="context (tokens)", ylabel="decode speedup vs dotf AR", title="decode-only speedup")
    a.legend(fontsize=8)
    for key, (label, _, _) in STEPS.items():
        b.plot([s["context"] for s in steps], [s[f"{key}_ms"] for s in steps], marker="o", label=label)
    b.set(xscale="log", xlabel="context (tokens)", ylabel="ms per step", title="step cost")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = {"model": args.model, "new_tokens": args.new_tokens, "machine": machine(),
            "contexts": [int(c) for c in args.contexts.split(",") if c], "kinds": args.kinds.split(","),
            "methods": args.methods.split(","), "split": args.split}
    for method in meta["methods"]:
        method_options(method)  # an unknown name fails before the model loads
    model = dotf.load(args.model, dtype=torch.float32)
    prompts.ensure_installed()
    records, steps = [], []
    for context in meta["contexts"]:
        for kind in meta["kinds"]:
            ids = prompts.long_prompt(model.tokenizer, kind, context - args.new_tokens, split=args.split)
            ar = None
            for method in meta["methods"]:
                rec = {"context": context, "kind": kind, **run_cell(model, method, ids, args.new_tokens)}
                ar = rec["tokens"] if method == "ar" else ar
                rec["exact"] = ar is None or rec["tokens"] == ar
                print(f"[{context} {kind}] {method}: {rec['seconds']:.1f} s (prefill {rec['prefill_seconds']:.1f} s), "
                      f"decode {rec['decode_tokens_per_second']:.1f} tok/s, exact {rec['exact']}", file=sys.stderr)
                records.append(rec)
        write_outputs(args.out, meta, records, steps)  # after every context: a long run keeps what it measured
    if args.step_contexts:
        steps = step_costs(model, [int(c) for c in args.step_contexts.split(",")], args.step_repeats)
    print(write_outputs(args.out, meta, records, steps, plot_too=True))


def write_outputs(out: str | None, meta: dict, records: list[dict], steps: list[dict], plot_too: bool = False) -> str:
    table = summarize(records, meta["methods"])
    done = {**meta, "contexts": sorted({r["context"] for r in records})}
    text = markdown(table, steps, records, done)
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "results.json").write_text(json.dumps({"meta": done, "summary": table, "steps": steps,
                                                       "records": records}, indent=1))
        (path / "table.md").write_text(text)
        if plot_too and records and steps:
            plot(table, steps, path / "long_context.png")
    return text


if __name__ == "__main__":
    main()
