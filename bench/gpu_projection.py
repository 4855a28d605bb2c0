"""Projected GPU speedups of the paper's method ("asd") from GPU step times and CPU-measured rounds.

No real model can be brought to the offline GPU machine, so the GPU benchmark (gpu_step_bench.py)
times steps of random-weight models of real shapes. This script combines those step times (CUDA
graphs, context bucket of the --context given) with what asd actually did on the real model on the
CPU, prompt by prompt (bench/decode.py records: rounds, drafted tokens, plain steps, the attention
layers its plan skipped), and prints the decode-phase speedup over AR that those rounds would give
on the GPU:

    AR  time = new_tokens * t_decode
    asd time = drafted * t_draft(skipped) + rounds * t_verify(mean tokens per verify) + plain * t_decode

t_draft(s) interpolates between a full step (s = 0) and the measured draft that skips every other
attention sublayer; t_verify(T) interpolates between the measured T = 1, 5 and 9. Prefill is left
out (the same pass for both). This is a projection, not a measurement: the acceptance comes from
float32 on the CPU, the GPU steps run bf16 weights of the same shape.

    python3 bench/gpu_projection.py --gpu bench/results/gpu-h100/gpu_step_bench.json \
        --cpu bench/results/smollm2-cpu/results.json=smollm2-135m \
        --cpu bench/results/qwen1.5b-cpu/results.json=qwen2.5-1.5b [--context 512] [--out table.md]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys


def interp(x: float, points: list[tuple[float, float]]) -> float:
    """Piecewise-linear through sorted (x, y) points, extended linearly past the ends."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x <= x1 or (x1, y1) == pts[-1]:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]


def project(record: dict, entry: dict, skipped_in_half: int) -> tuple[float, float]:
    s = record["stats"]
    t_decode = entry["decode"]["graphed_seconds"]
    t_half = entry["draft"]["graphed_seconds"]
    skipped = len(s.get("skipped_attention_layers", []))
    t_draft = t_decode - (t_decode - t_half) * skipped / skipped_in_half
    verify_points = [(1.0, t_decode)] + [(float(v["tokens"]), v["graphed_seconds"]) for v in entry["verify"].values()]
    rounds, drafted, plain = s["rounds"], s["drafted"], s.get("plain_steps", 0)
    mean_tokens = 1.0 + drafted / rounds if rounds else 1.0
    asd = drafted * t_draft + rounds * interp(mean_tokens, verify_points) + plain * t_decode
    ar = s["new_tokens"] * t_decode
    return ar, asd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", required=True, help="gpu_step_bench.py JSON")
    ap.add_argument("--cpu", action="append", required=True, metavar="RESULTS=SHAPE",
                    help="bench/decode.py results.json and the GPU shape of its model")
    ap.add_argument("--context", default="512", help="the GPU context the steps were timed at")
    ap.add_argument("--out", help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    gpu = json.load(open(args.gpu))
    lines = [f"Projected decode-phase speedup of asd over AR on {gpu['device']} (CUDA graphs, context "
             f"{args.context}), from CPU-measured rounds (bench/gpu_projection.py; a projection, not a measurement)",
             "", "| model (GPU shape) | task | prompts | acceptance (CPU) | tokens/verify | projected asd / AR |",
             "|---|---|---|---|---|---|"]
    for spec in args.cpu:
        path, shape = spec.split("=")
        cpu = json.load(open(path))
        entry = gpu["models"][shape]["contexts"][args.context]
        skipped_in_half = gpu["models"][shape]["draft_skipped_attention"]
        by_task: dict[str, list] = {}
        for rec in cpu["records"]:
            if rec["method"] == "asd" and rec["stats"].get("rounds"):
                by_task.setdefault(rec["task"], []).append(rec)
        for task, recs in sorted(by_task.items()):
            ratios, acc, tpv = [], [], []
            for rec in recs:
                ar, asd = project(rec, entry, skipped_in_half)
                ratios.append(ar / asd)
                acc.append(rec["stats"]["acceptance_rate"])
                tpv.append(1 + rec["stats"]["drafted"] / rec["stats"]["rounds"])
            lines.append(f"| {cpu['meta']['model'].split('/')[-1]} ({shape}) | {task} | {len(recs)} | "
                         f"{statistics.mean(acc):.2f} | {statistics.mean(tpv):.2f} | "
                         f"{statistics.mean(ratios):.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
