"""Sweep one generate() option of a strategy on tuning prompts that no benchmark table uses.

    python bench/tune.py --model smollm2-135m --option gamma --values 0.6,0.4,0.3,0.2,0.1
    python bench/tune.py --model smollm2-135m --option max_draft --values 4,6,8,12 --tasks summarize
    python bench/tune.py --option options --values '{"draft_exit": "probability", "gamma": 0.2};{"margin": 0.1}'

A value that is a JSON object sets several options at once (values are then separated by ";").
--sampling '{"temperature": 0.7, "top_p": 0.9}' samples every call (AR included), repeat r with seed r.

Prompts: common.task_prompts(tuning=True): aclsum *train* summaries (decode.py uses validation), HumanEval
problems 20.. (the tests use the first ten, decode.py the last ones) and ShareGPT first turns drawn with
seed 7 (decode.py: seed 1).
Per prompt, after one warm-up call, every value and plain AR run interleaved, `--repeats` times.
Prints the decode-only speedup over AR (prefill excluded: it is the same for every value) summed over
prompts and repeats, per task.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, task_prompts  # noqa: E402

import dotf  # noqa: E402


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--strategy", default="dotf")
    p.add_argument("--option", required=True, help="a generate() option name, e.g. gamma or max_draft "
                   "(a label when the values are JSON objects of options)")
    p.add_argument("--values", required=True, help="comma-separated values (JSON literals), or ';'-separated "
                   "JSON objects of options")
    p.add_argument("--tasks", default="summarize,code,chat")
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--sampling", default=None, help="JSON of sampling options applied to every call")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    values = [parse_value(v) for v in args.values.split(";" if args.values.lstrip().startswith("{") else ",")]
    machine()  # prints the CPU and its kernel-choosing features
    model = dotf.load(args.model, dtype=torch.float32)
    sampling = {"do_sample": True, **json.loads(args.sampling)} if args.sampling else {}
    print(f"{args.model}, strategy {args.strategy}, {args.option} in {values}, {args.prompts} prompts x "
          f"{args.repeats} repeats per task, {args.new_tokens} new tokens, 1 thread"
          + (f", sampled with {sampling}" if sampling else ""))
    for task in args.tasks.split(","):
        decode_seconds: dict = {}
        for _, ids in task_prompts(model.tokenizer, task, args.prompts, tuning=True):
            model.generate(ids, max_new_tokens=8, strategy=args.strategy)  # warm-up
            for rep in range(args.repeats):
                for v in ["ar", *values]:
                    options = v if isinstance(v, dict) else {args.option: v}
                    kw = {"strategy": "ar"} if v == "ar" else {"strategy": args.strategy, **options}
                    if sampling:
                        kw.update(sampling, seed=rep)
                    s = model.generate(ids, max_new_tokens=args.new_tokens, **kw).stats
                    decode_seconds[str(v)] = decode_seconds.get(str(v), 0.0) + s["seconds"] - s["prefill_seconds"]
        ar = decode_seconds["ar"]
        cells = "  ".join(f"{v if isinstance(v, dict) else f'{args.option}={v}'}: {ar / decode_seconds[str(v)]:.2f}x"
                          for v in values)
        print(f"{task:10s} decode-only speedup over AR  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
