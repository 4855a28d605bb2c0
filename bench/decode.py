"""End-to-end decode benchmark: transformers baselines vs dotf strategies on real models and prompts.

    python bench/decode.py --model smollm2-135m --tasks summarize,code,chat --out bench/results/smollm2

Methods run interleaved per prompt (A B C ... then again), in one process, at a fixed thread count
(1 by default: on these 2-core VMs 2-thread timings vary up to 7x). Every method's tokens are
compared with transformers' greedy output. Writes results.json (every raw figure), table.md and
speedup.png into --out.

Sampled runs: --sampling '{"temperature": 0.7, "top_p": 0.9}' makes every method sample with those
warpers (transformers' defaults otherwise, top_k 50 included), each repeat with its own seed (dotf's
seed=repeat; torch.manual_seed(repeat) before a transformers call). Exactness is then a matter of
distribution (tests/python/speculative/test_sampling.py), not of tokens: the table leaves it out.

llama.cpp as a peer: methods llama_cpp and llama_cpp_lookup (greedy only; see bench/llama_cpp_peer.py, set up
by `bash bench/setup_llama_cpp.sh`) run the same token ids on the same weights converted to GGUF at the run's
precision, on the same thread count. A second table sets them against dotf AR and dotf, with their token
agreement with dotf AR:

    python bench/decode.py --model smollm2-135m --methods ar,dotf,llama_cpp,llama_cpp_lookup --prompts 2
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
from common import (TASKS, decode_bytes_per_token, grouped_bar_chart, machine, matvec_bandwidth_gbs,  # noqa: E402
                    read_bandwidth_gbs, task_prompts)

import dotf  # noqa: E402
from llama_cpp_peer import METHODS as LLAMA_CPP_METHODS  # noqa: E402

# dotf methods beyond the strategy names: (strategy, extra generate() options).
DOTF_VARIANTS = {
    "dotf_cost": ("dotf", {"selection": "cost"}),  # the cost-aware selection instead of the threshold rule
    # The full LM head in every pass (the screen off), to measure the LM-head screen interleaved with it.
    "ar_noscreen": ("ar", {"lm_head_screen": False}),
    "dotf_noscreen": ("dotf", {"lm_head_screen": False}),
}

HF_METHODS = {
    "hf_greedy": {},
    "hf_sample": {},  # transformers' plain generate, for --sampling runs
    "hf_prompt_lookup": {"prompt_lookup_num_tokens": 10},
    "hf_early_exit": {"assistant_early_exit": 4},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="summarize,code,chat")
    p.add_argument("--prompts", type=int, default=3, help="prompts per task")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--methods", default="hf_greedy,hf_prompt_lookup,hf_early_exit,ar,asd")
    p.add_argument("--repeats", type=int, default=1, help="interleaved repetitions per prompt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--asd", default="{}", help="JSON of extra generate() options for dotf's speculative methods")
    p.add_argument("--linear-path", default="auto")
    p.add_argument("--sampling", default=None,
                   help="JSON of sampling options (temperature, top_k, top_p, min_p): every method samples")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


class Runner:
    def __init__(self, args):
        from transformers import AutoModelForCausalLM
        self.dtype = getattr(torch, args.dtype)
        self.model = dotf.load(args.model, dtype=self.dtype, linear_path=args.linear_path)
        self.tokenizer = self.model.tokenizer
        self.hf = AutoModelForCausalLM.from_pretrained(str(self.model.source_dir), dtype=self.dtype).eval()
        self.hf.generation_config.eos_token_id = None  # fixed-length runs: every method emits new_tokens
        self.hf.generation_config.pad_token_id = self.model.eos_token_ids[0] if self.model.eos_token_ids else 0
        self.new_tokens = args.new_tokens
        self.asd_options = json.loads(args.asd)
        self.sampling = json.loads(args.sampling) if args.sampling else None
        self.llama = None
        if any(m in LLAMA_CPP_METHODS for m in args.methods.split(",")):
            from llama_cpp_peer import LlamaCppPeer
            self.llama = LlamaCppPeer(self.model.source_dir, args.dtype, args.threads)

    def hf_prefill_seconds(self, ids: list[int]) -> float:
        """One transformers forward over the prompt with a fresh cache: what generate's prefill costs."""
        with torch.no_grad():
            t0 = time.perf_counter()
            self.hf(torch.tensor([ids]), use_cache=True)
            return time.perf_counter() - t0

    def run(self, method: str, ids: list[int], seed: int = 0) -> dict:
        sampling = {"do_sample": True, **self.sampling} if self.sampling else {}
        t0 = time.perf_counter()
        if method in HF_METHODS:
            if sampling:
                torch.manual_seed(seed)
            with torch.no_grad():
                # An explicit mask: transformers infers one from pad_token_id otherwise, and the pad id here
                # (the EOS id) occurs in chat-templated prompts, whose turn ends it would then mask out.
                x = torch.tensor([ids])
                out = self.hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=self.new_tokens,
                                       **(sampling or {"do_sample": False}), **HF_METHODS[method])
            tokens, stats = out[0, len(ids):].tolist(), {}
        elif method in LLAMA_CPP_METHODS:
            r = self.llama.generate(method, ids, self.new_tokens)
            tokens, stats = r["tokens"], r["stats"]
        else:
            strategy, extra = DOTF_VARIANTS.get(method, (method, {}))
            res = self.model.generate(ids, max_new_tokens=self.new_tokens, strategy=strategy,
                                      **(self.asd_options if strategy != "ar" else {}), **extra, **sampling,
                                      **({"seed": seed} if sampling else {}))
            tokens, stats = res.tokens, res.stats
        seconds = time.perf_counter() - t0
        if method in ("hf_greedy", "hf_sample"):  # its prefill, timed apart (after the clock), for its decode-only rate
            stats = {"seconds": seconds, "prefill_seconds": self.hf_prefill_seconds(ids)}
        return {"tokens": tokens, "seconds": seconds, "tokens_per_second": len(tokens) / seconds, "stats": stats}


def mark_exactness(results: dict) -> None:
    """exact: dotf's lossless contract, each dotf strategy's tokens == dotf AR's (same weights, same
    kernels); each transformers method's == transformers' greedy, llama.cpp's lookup == llama.cpp's plain
    decode. matches_hf: tokens == transformers' greedy; in float32 different kernels round differently, so
    a near-tie can flip a token there (float64 parity is asserted by the tests). agrees_with_ar and
    common_prefix_with_ar: tokens == dotf AR's, and the length of their common prefix."""
    ar = results.get("ar", {}).get("tokens")
    hf = results.get("hf_greedy", {}).get("tokens")
    llama = results.get("llama_cpp", {}).get("tokens")
    for m, r in results.items():
        reference = hf if m.startswith("hf_") else llama if m in LLAMA_CPP_METHODS else ar
        r["exact"] = reference is None or r["tokens"] == reference
        r["matches_hf"] = hf is None or r["tokens"] == hf
        if ar is not None:
            r["agrees_with_ar"] = r["tokens"] == ar
            r["common_prefix_with_ar"] = common_prefix(r["tokens"], ar)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def summarize(records: list[dict], methods: list[str]) -> dict:
    """Per (task, method): median tok/s, speedups (vs dotf AR and vs transformers' plain generate, greedy or
    sampled), acceptance, exactness."""
    hf_plain = next((m for m in ("hf_greedy", "hf_sample") if m in methods), None)
    table = {}
    for task in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == task]
        med = {m: statistics.median(r["tokens_per_second"] for r in rows if r["method"] == m) for m in methods}
        for m in methods:
            mine = [r for r in rows if r["method"] == m]
            stats = [r["stats"] for r in mine if r["stats"].get("drafted")]
            drafted = sum(s["drafted"] for s in stats)
            entry = {
                "tokens_per_second": med[m],
                "speedup_vs_dotf_ar": med[m] / med["ar"] if "ar" in med else None,
                "speedup_vs_hf": med[m] / med[hf_plain] if hf_plain else None,
            }
            if all("exact" in r for r in mine):  # greedy runs
                entry["exact"] = all(r["exact"] for r in mine)
                entry["matches_hf"] = sum(r["matches_hf"] for r in mine) / len(mine)
            decode = [r for r in mine if "decode_tokens_per_second" in r]
            if decode:
                entry["decode_tokens_per_second"] = statistics.median(r["decode_tokens_per_second"] for r in decode)
                entry["roofline_fraction"] = statistics.median(r["roofline_fraction"] for r in decode)
                entry["roofline_fraction_min"] = min(r["roofline_fraction"] for r in decode)
            if stats:
                entry["acceptance_rate"] = sum(s["accepted"] for s in stats) / drafted if drafted else 0.0
                entry["mean_accepted_length"] = statistics.mean(s["mean_accepted_length"] for s in stats)
                probs = [p for s in stats for p in s.get("mean_acceptance_probability_at", [])[:1] if p == p]
                if probs:  # sampling: mean min(1, p/q) of the first draft of a round
                    entry["first_draft_acceptance_probability"] = statistics.mean(probs)
                entry["attention_skipped_pct"] = 100 * statistics.mean(
                    len(s["skipped_attention_layers"]) / len(s["layer_similarity"]) for s in stats)
            lookup = [r["stats"] for r in mine if "lookup_drafted" in r["stats"]]
            if lookup:  # llama.cpp's prompt lookup: accepted / drafted over its proposals
                drafted = sum(s["lookup_drafted"] for s in lookup)
                entry["acceptance_rate"] = sum(s["lookup_accepted"] for s in lookup) / drafted if drafted else 0.0
            table[f"{task}/{m}"] = entry
    return table


def markdown(table: dict, meta: dict) -> str:
    sampled = meta.get("sampling")
    mode = f"sampled with {json.dumps(sampled)} (top_k 50 unless given)" if sampled else "greedy"
    lines = [f"model {meta['model']}, {meta['dtype']}, {mode}, {meta['new_tokens']} new tokens, "
             f"{meta['machine']['threads']} thread(s), {meta['machine']['cpu']} "
             f"({' '.join(meta['machine'].get('cpu_features', []))}); roofline "
             f"{meta['roofline_tokens_per_second']:.1f} tok/s ({meta['matvec_gbs']:.1f} GB/s matvec, median of "
             f"per-prompt measurements {min(meta.get('matvec_gbs_per_prompt') or [meta['matvec_gbs']]):.1f}-"
             f"{max(meta.get('matvec_gbs_per_prompt') or [meta['matvec_gbs']]):.1f}; a plain "
             f"streaming read reached {meta.get('read_gbs', float('nan')):.1f} GB/s)", ""]
    columns = ["task", "method", "tok/s", "vs dotf AR", "vs HF " + ("sample" if sampled else "greedy"),
               "decode tok/s", "% of roofline (min)", "acceptance", "mean accepted len", "% attn skipped"]
    columns += ["P(accept) 1st draft"] if sampled else ["exact", "= HF"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    fmt = lambda v, f="{:.2f}": "–" if v is None else f.format(v)  # noqa: E731
    for key, e in table.items():
        task, method = key.split("/")
        cells = [task, method, f"{e['tokens_per_second']:.1f}", f"{fmt(e['speedup_vs_dotf_ar'])}x",
                 f"{fmt(e['speedup_vs_hf'])}x", fmt(e.get('decode_tokens_per_second'), '{:.1f}'), roofline_cell(e),
                 fmt(e.get('acceptance_rate')), fmt(e.get('mean_accepted_length')),
                 fmt(e.get('attention_skipped_pct'), '{:.0f}')]
        cells += [fmt(e.get("first_draft_acceptance_probability"))] if sampled else [
            "yes" if e["exact"] else "NO", f"{e['matches_hf']:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "tok/s: new tokens over the whole call (prefill included). decode tok/s: prefill excluded; "
              "% of roofline: that over the memory-bandwidth bound at the prompt's mean context (weights + KV "
              "bytes per token over the matvec GB/s), median over prompts (minimum in brackets)."]
    if sampled:
        lines += ["acceptance: accepted / drafted tokens; P(accept) 1st draft: mean min(1, p/q) of a round's first "
                  "draft (1 - the total-variation distance between the draft's and the model's warped distributions)."]
    else:
        lines += ["exact: every dotf strategy's tokens equal dotf AR's (the lossless contract; HF methods: equal to "
                  "HF greedy; llama.cpp's lookup: equal to llama.cpp's plain decode). = HF: share of prompts whose tokens equal transformers' greedy output (float32 "
                  "kernels round differently, so near-ties may flip; float64 parity is tested)."]
    if meta.get("peer_summary"):
        lines += peer_markdown(meta["peer_summary"], meta)
    return "\n".join(lines) + "\n"


def peer_summary(records: list[dict], methods: list[str]) -> dict:
    """Per (task or "all", llama.cpp method): its median tok/s (whole call and decode-only), dotf AR's and
    dotf's medians over it, and its token agreement with dotf AR (share of prompts with equal tokens, mean
    common prefix)."""
    peers = [m for m in methods if m in LLAMA_CPP_METHODS]
    table = {}
    for task in sorted({r["task"] for r in records}) + ["all"]:
        rows = [r for r in records if task in ("all", r["task"])]

        def med(m, key):
            values = [r[key] for r in rows if r["method"] == m and key in r]
            return statistics.median(values) if values else None

        def ratio(a, b):
            return a / b if a is not None and b else None

        for m in peers:
            mine = [r for r in rows if r["method"] == m]
            entry = {"tokens_per_second": med(m, "tokens_per_second"),
                     "decode_tokens_per_second": med(m, "decode_tokens_per_second"), "prompts": len(mine)}
            for ref in ("ar", "dotf"):
                if ref in methods:
                    entry[f"{ref}_over_it"] = ratio(med(ref, "tokens_per_second"), entry["tokens_per_second"])
                    entry[f"{ref}_over_it_decode"] = ratio(med(ref, "decode_tokens_per_second"),
                                                           entry["decode_tokens_per_second"])
            if all("agrees_with_ar" in r for r in mine):
                entry["agrees_with_ar"] = sum(r["agrees_with_ar"] for r in mine) / len(mine)
                entry["common_prefix_with_ar"] = statistics.mean(r["common_prefix_with_ar"] for r in mine)
            table[f"{task}/{m}"] = entry
    return table


def peer_markdown(table: dict, meta: dict) -> list[str]:
    info = meta.get("llama_cpp") or {}
    fmt = lambda v, f="{:.2f}x": "–" if v is None else f.format(v)  # noqa: E731
    lines = ["", f"llama.cpp peer: llama-cpp-python {info.get('version')}, {info.get('gguf_type', '?').upper()} GGUF "
             f"of the same weights, {info.get('threads')} thread(s), n_batch {info.get('n_batch')}; "
             f"{info.get('system_info', '')}", "",
             "| task | method | tok/s | decode tok/s | dotf AR / it | dotf AR / it, decode | dotf / it | "
             "dotf / it, decode | = dotf AR | common prefix with dotf AR |", "|" + "---|" * 10]
    for key, e in table.items():
        task, method = key.split("/")
        lines.append("| " + " | ".join([
            task, method, fmt(e["tokens_per_second"], "{:.1f}"), fmt(e["decode_tokens_per_second"], "{:.1f}"),
            fmt(e.get("ar_over_it")), fmt(e.get("ar_over_it_decode")), fmt(e.get("dotf_over_it")),
            fmt(e.get("dotf_over_it_decode")), fmt(e.get("agrees_with_ar"), "{:.0%}"),
            fmt(e.get("common_prefix_with_ar"), "{:.1f}") + f" / {meta['new_tokens']}"]) + " |")
    lines += ["", "X / it: X's median tok/s over the peer's (the whole call, then decode only: prefill excluded; "
              "llama.cpp's prefill is timed to its first new token). = dotf AR: share of prompts whose tokens equal "
              "dotf AR's; common prefix: mean count of leading new tokens equal to dotf AR's. all: medians over "
              "every prompt."]
    return lines


def roofline_cell(e: dict) -> str:
    if "roofline_fraction" not in e:
        return "–"
    return f"{e['roofline_fraction']:.0%} ({e['roofline_fraction_min']:.0%})"


def plot(table: dict, path: Path) -> None:
    tasks = sorted({k.split("/")[0] for k in table})
    methods = list(dict.fromkeys(k.split("/")[1] for k in table))
    speedups = {m: [table[f"{t}/{m}"]["speedup_vs_dotf_ar"] for t in tasks] for m in methods}
    grouped_bar_chart(path, tasks, speedups, "speedup vs dotf AR (tok/s ratio)")


def write_outputs(out: Path, meta: dict, records: list[dict]) -> None:
    table = summarize(records, meta["methods"])
    md = markdown(table, meta)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": table, "records": records}, indent=1))
    (out / "table.md").write_text(md)
    plot(table, out / "speedup.png")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    llama_methods = [m for m in methods if m in LLAMA_CPP_METHODS]
    if llama_methods and args.sampling:
        raise SystemExit(f"--sampling: {', '.join(llama_methods)} decode greedily only (llama.cpp's sampler chain "
                         f"differs from dotf's and transformers' warpers); leave them out of --methods")
    if llama_methods and "ar" not in methods:
        print("note: without ar in --methods the llama.cpp table has no dotf AR ratios or token agreement",
              file=sys.stderr)
    runner = Runner(args)
    # The bandwidth drifts by up to ~30% over minutes on these shared VMs: it is measured again right
    # before each prompt's runs and that prompt's fractions use its own figure.
    bandwidths, read_gbs = [], read_bandwidth_gbs(runner.dtype)
    bytes_per_token = decode_bytes_per_token(runner.model, 400)
    records = []
    for task in args.tasks.split(","):
        for pid, ids in task_prompts(runner.tokenizer, task, args.prompts):
            for m in methods:  # warm-up; also builds dotf's int8 draft once, a one-time load cost
                if m not in HF_METHODS:
                    runner.run(m, ids[:8])
            for rep in range(args.repeats):
                bandwidth = matvec_bandwidth_gbs(runner.dtype)
                bandwidths.append(bandwidth)
                results = {m: runner.run(m, ids, seed=rep) for m in methods}
                # Decode-only rate (prefill excluded) against the roofline at this prompt's mean context.
                roofline = bandwidth * 1e9 / decode_bytes_per_token(runner.model, len(ids) + args.new_tokens // 2)
                for m, r in results.items():
                    r.update(task=task, prompt=pid, prompt_tokens=len(ids), method=m, repeat=rep,
                             roofline_tokens_per_second=roofline)
                    if r["stats"].get("prefill_seconds") is not None and len(r["tokens"]) > 1:
                        r["decode_tokens_per_second"] = (len(r["tokens"]) - 1) / (
                            r["stats"]["seconds"] - r["stats"]["prefill_seconds"])
                        r["roofline_fraction"] = r["decode_tokens_per_second"] / roofline
                if not runner.sampling:
                    mark_exactness(results)
                for m, r in results.items():
                    records.append(r)
                    print(f"{task:9s} {pid:18s} {m:16s} {r['tokens_per_second']:6.1f} tok/s exact={r.get('exact')} "
                          f"matches_hf={r.get('matches_hf')} prefix_with_ar={r.get('common_prefix_with_ar')}",
                          flush=True)
    bandwidth = statistics.median(bandwidths)
    meta = {"model": args.model, "dtype": args.dtype, "new_tokens": args.new_tokens, "machine": machine(),
            "methods": methods, "asd_options": runner.asd_options, "linear_path": args.linear_path,
            "sampling": runner.sampling,
            "matvec_gbs": bandwidth, "matvec_gbs_per_prompt": bandwidths, "read_gbs": read_gbs,
            "decode_bytes_per_token": bytes_per_token,
            "roofline_tokens_per_second": bandwidth * 1e9 / bytes_per_token}
    if runner.llama is not None:
        meta["llama_cpp"] = runner.llama.info()
        meta["peer_summary"] = peer_summary(records, methods)
    if args.out:
        write_outputs(Path(args.out), meta, records)
    else:
        print(markdown(summarize(records, methods), meta))


if __name__ == "__main__":
    main()
