"""`python -m dotf bench`: a short interleaved comparison of strategies on three built-in prompts (a summary, a
code edit, a chat question), printed as a markdown table with the machine it ran on, for an issue report.
The project's full benchmarks (real datasets, transformers and llama.cpp peers) are in bench/."""
from __future__ import annotations

import argparse
import os
import platform
import statistics

import torch

PROMPTS = {
    "summarize": (
        "Summarize the following paragraph in two sentences.\n\n"
        "Speculative decoding speeds up text generation without changing its output. A small, fast draft "
        "model proposes several tokens, and the large model checks all of them in a single forward pass, "
        "keeping the longest prefix it agrees with and adding one token of its own. Because checking many "
        "tokens at once costs about as much as generating one, every accepted draft token saves most of a "
        "step. Self-speculative decoding goes one step further: the draft is the large model itself with "
        "some of its layers skipped, so no second model has to be trained, stored or kept in memory."),
    "code": (
        "Rewrite this function so that it also accepts a list of numbers and returns the mean of each "
        "number's digits.\n\n"
        "def digit_mean(n: int) -> float:\n"
        "    digits = [int(d) for d in str(abs(n))]\n"
        "    return sum(digits) / len(digits)\n"),
    "chat": "What are three good habits for writing maintainable Python code? Explain each briefly.",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategies", default="ar,dotf", help="comma-separated; the first is the baseline")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds over all prompts")


def _cpu() -> tuple[str, list[str]]:
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    return name, [f for f in wanted if f in flags]


def run(model, args: argparse.Namespace) -> int:
    import dotf  # noqa: PLC0415

    strategies = args.strategies.split(",")
    prompts = {name: [{"role": "user", "content": text}] if getattr(model.tokenizer, "chat_template", None) else text
               for name, text in PROMPTS.items()}
    for prompt in prompts.values():  # warm-up: first-use costs (the int8 draft, page faults) stay out of the timings
        for s in strategies:
            model.generate(prompt, max_new_tokens=4, strategy=s, eos_token_id=[])
    rates: dict = {(p, s): [] for p in prompts for s in strategies}
    tokens: dict = {}
    accepted: dict = {}
    for rep in range(args.repeats):
        for p, prompt in prompts.items():
            for s in (strategies if rep % 2 == 0 else strategies[::-1]):
                res = model.generate(prompt, max_new_tokens=args.max_new_tokens, strategy=s, eos_token_id=[])
                rates[(p, s)].append(res.stats["tokens_per_second"])
                tokens[(p, s)] = res.tokens
                if res.stats.get("drafted"):
                    accepted[(p, s)] = res.stats["acceptance_rate"]
    cpu, features = _cpu()
    base = strategies[0]
    print(f"dotf {dotf.__version__}, torch {torch.__version__}, model {args.model} ({args.dtype}, {model.device}), "
          f"{torch.get_num_threads()} thread(s) of {os.cpu_count()}, {cpu} [{' '.join(features)}], "
          f"{args.max_new_tokens} new tokens, median of {args.repeats} interleaved runs\n")
    print(f"| prompt | strategy | tok/s | vs {base} | acceptance | same tokens as {base} |")
    print("|---|---|---|---|---|---|")
    for p in prompts:
        for s in strategies:
            rate = statistics.median(rates[(p, s)])
            ratio = rate / statistics.median(rates[(p, base)])
            acc = f"{accepted[(p, s)]:.0%}" if (p, s) in accepted else "–"
            same = "yes" if tokens[(p, s)] == tokens[(p, base)] else "NO"
            print(f"| {p} | {s} | {rate:.1f} | {ratio:.2f}x | {acc} | {same} |")
    return 0
