"""Two builds of dotf side by side: the same prompts, strategies and options, interleaved, one thread.

    python bench/compare_builds.py --other /path/to/other/checkout/python --model smollm2-135m \
        --tasks summarize,code,chat --prompts 2 --repeats 3 --out bench/results/compare_builds.json

Each build runs in its own worker process (PYTHONPATH = its python/ folder with its built dotf._C) and
loads the model once; after a warm-up call per strategy and prompt, the driver sends them the same
(strategy, prompt) calls in the order A B B A, so drifts of the machine's speed fall on both alike.
Reports, per strategy, the median tok/s of each build, their ratio, and whether the tokens are identical.
Run it twice with --this and --other swapped (--swap): a process-level effect (which worker started first,
where its memory landed) then shows as a ratio that follows the order rather than the build.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WORKER = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
import dotf
m = dotf.load(sys.argv[1])
print(json.dumps({"dotf": dotf.__file__}), flush=True)
for line in sys.stdin:
    call = json.loads(line)
    res = m.generate(call["ids"], max_new_tokens=call["new_tokens"], strategy=call["strategy"])
    print(json.dumps({"tokens": res.tokens, "tok_s": res.stats["tokens_per_second"]}), flush=True)
"""


class Worker:
    def __init__(self, python_dir: str, model: str, threads: int):
        env = {**os.environ, "PYTHONPATH": python_dir}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, model, str(threads)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.where = json.loads(self.proc.stdout.readline())["dotf"]
        git = ["git", "-C", os.path.dirname(os.path.abspath(python_dir)), "rev-parse", "--short", "HEAD"]
        self.commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip() or "unknown"

    def run(self, **call) -> dict:
        self.proc.stdin.write(json.dumps(call) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", required=True, help="python/ folder of the other build (its dotf/_C*.so built)")
    p.add_argument("--this", default=str(HERE.parent / "python"), help="python/ folder of this build")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="summarize,code,chat")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--strategies", default="ar,asd,dotf")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--swap", action="store_true", help="start the other build's worker first")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import dotf  # noqa: PLC0415  (this build, for the tokenizer and prompts)
    from common import machine, task_prompts  # noqa: PLC0415

    tokenizer = dotf.load(args.model).tokenizer
    prompts = [(task, pid, ids) for task in args.tasks.split(",")
               for pid, ids in task_prompts(tokenizer, task, args.prompts)]
    order = [("other", args.other), ("this", args.this)] if args.swap else [("this", args.this), ("other", args.other)]
    builds = {name: Worker(path, args.model, args.threads) for name, path in order}
    print({name: (w.where, w.commit) for name, w in builds.items()}, file=sys.stderr)
    for _, _, ids in prompts:  # warm-up: first-use costs (the int8 draft, page faults) stay out of the timings
        for strategy in args.strategies.split(","):
            for w in builds.values():
                w.run(ids=ids[:16], new_tokens=4, strategy=strategy)
    records = []
    for rep in range(args.repeats):
        for task, pid, ids in prompts:
            for strategy in args.strategies.split(","):
                order = ("this", "other", "other", "this") if rep % 2 == 0 else ("other", "this", "this", "other")
                for name in order:
                    r = builds[name].run(ids=ids, new_tokens=args.new_tokens, strategy=strategy)
                    records.append({"build": name, "task": task, "prompt": pid, "strategy": strategy, **r})
    for w in builds.values():
        w.close()

    summary = {}
    for strategy in args.strategies.split(","):
        rows = [r for r in records if r["strategy"] == strategy]
        med = {b: statistics.median(r["tok_s"] for r in rows if r["build"] == b) for b in builds}
        tokens = {(r["prompt"], r["build"]): r["tokens"] for r in rows}
        same = all(tokens[(pid, "this")] == tokens[(pid, "other")] for _, pid, _ in prompts)
        summary[strategy] = {"this_tok_s": med["this"], "other_tok_s": med["other"],
                             "ratio": med["this"] / med["other"], "identical_tokens": same}
        print(f"{strategy:5s} this {med['this']:7.2f} tok/s  other {med['other']:7.2f} tok/s  "
              f"ratio {med['this'] / med['other']:.3f}  identical tokens: {same}")
    if args.out:
        commits = {name: w.commit for name, w in builds.items()}
        Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args), "commits": commits, "summary": summary,
                                              "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
