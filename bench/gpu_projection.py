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

With --quant it projects dotf's quantized self-draft instead (int8 per channel, int4 in groups of 128)
from the acceptance bench/quant_draft_acceptance.py measured on real models with the CUDA schemes
emulated, for a GPU shape of the user's choice (the acceptance of a small model stands in for the
large shape's: a proxy, said in the table):

    python3 bench/gpu_projection.py --gpu bench/results/gpu-h100/gpu_step_bench.json --context 2048 \
        --quant bench/results/quant_draft_acceptance/qwen2.5-coder-1.5b.json=llama2-7b

    draft step = the measured quantized draft step when the GPU JSON has one ("draft_int8", "draft_int4"),
                 else the full step with its linears' times swapped for the measured quantized kernels'
                 ("draft_int8_kernels", gpu_step_bench.py), else the full step scaled by the draft's bytes (quantized weights + the exact KV cache)
                 over a full step's bytes, at the full step's measured bandwidth;
    round      = k draft steps + one verify of k + 1 tokens (interpolated from the measured T = 1, 5, 9),
                 E[tokens] = (1 - a^(k+1)) / (1 - a) for a per-token acceptance a; the best k <= 8.
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


def quantized_weight_bytes(shape: dict, scheme: str) -> float:
    """Bytes of every linear of a draft (the LM head included) under a scheme, from the model's shape."""
    h, f, hd = shape["hidden_size"], shape["intermediate_size"], shape["head_dim"]
    q, kv = shape["num_heads"] * hd, shape["num_kv_heads"] * hd
    linears = [(q, h), (kv, h), (kv, h), (h, q), (f, h), (f, h), (h, f)] * shape["num_layers"]
    linears.append((shape["vocab_size"], h))
    per_group = {"int4-sym": 2, "int4-asym": 4}  # an fp16 scale, plus an fp16 zero point when asymmetric
    total = 0.0
    for n, k in linears:
        if scheme == "int8":
            total += n * k + 2 * n  # int8 values, one fp16 scale per output channel
        else:
            total += n * k / 2 + n * -(-k // 128) * per_group[scheme]
    return total


def draft_step_source(entry: dict, scheme: str) -> tuple[float | None, str]:
    """The quantized draft step's seconds and where they come from: a measured step, the full step with
    its linears' times swapped for the measured quantized kernels' (gpu_step_bench.py), or None (bytes)."""
    bits = scheme.split("-")[0]
    if entry.get("draft_" + bits):
        return entry["draft_" + bits]["graphed_seconds"], "measured"
    if entry.get(f"draft_{bits}_kernels"):
        return entry[f"draft_{bits}_kernels"]["estimated_seconds"], "kernels"
    return None, "bytes"


def project_quantized(acceptance: float, scheme: str, shape: dict, entry: dict) -> tuple[float, int, float]:
    """(projected dotf / AR, best k, draft step / full step) for a per-token acceptance."""
    decode = entry["decode"]
    t_decode = decode["graphed_seconds"]
    t_draft, _ = draft_step_source(entry, scheme)
    if t_draft is None:
        b = decode["bytes"]
        t_draft = t_decode * (quantized_weight_bytes(shape, scheme) + b["kv"]) / b["total"]
    verify_points = [(1.0, t_decode)] + [(float(v["tokens"]), v["graphed_seconds"]) for v in entry["verify"].values()]
    best = (0.0, 0)
    for k in range(1, 9):
        tokens = (1 - acceptance ** (k + 1)) / (1 - acceptance) if acceptance < 1 else k + 1
        speedup = tokens * t_decode / (k * t_draft + interp(k + 1.0, verify_points))
        best = max(best, (speedup, k))
    return best[0], best[1], t_draft / t_decode


def quant_lines(gpu: dict, specs: list[str], context: str) -> list[str]:
    lines = [f"Projected decode-phase speedup of dotf with a quantized self-draft over AR on {gpu['device']} "
             f"(CUDA graphs, context {context}; bench/gpu_projection.py --quant; a projection, not a measurement). "
             "Acceptance: teacher-forced on the CPU on the named real model with the CUDA scheme emulated "
             "(bench/quant_draft_acceptance.py), standing in for the GPU shape's.", "",
             "| GPU shape | acceptance from | scheme | draft step / full step | greedy: acceptance, best k, dotf / AR "
             "| sampled (T 0.7, top-p 0.9): acceptance, best k, dotf / AR |", "|---|---|---|---|---|---|"]
    for spec in specs:
        path, shape_name = spec.split("=")
        acc = json.load(open(path))
        model = gpu["models"].get(shape_name)
        if not model or context not in model["contexts"]:
            lines.append(f"| {shape_name} | {acc['args']['model']} | – | not in this GPU run at context {context} | | |")
            continue
        entry = model["contexts"][context]
        for scheme, e in acc["summary"].items():
            cells = []
            for key in ("greedy_agreement", "sampled_acceptance"):
                speedup, k, cost = project_quantized(e[key], scheme, model["shape"], entry)
                cells.append(f"{e[key]:.3f}, {k}, {speedup:.2f}x")
            source = draft_step_source(entry, scheme)[1]
            lines.append(f"| {shape_name} | {acc['args']['model']} | {scheme} | {cost:.2f} ({source}) | "
                         + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", required=True, help="gpu_step_bench.py JSON")
    ap.add_argument("--cpu", action="append", default=[], metavar="RESULTS=SHAPE",
                    help="bench/decode.py results.json and the GPU shape of its model (asd's projection)")
    ap.add_argument("--quant", action="append", default=[], metavar="ACCEPTANCE=SHAPE",
                    help="bench/quant_draft_acceptance.py JSON and the GPU shape to project it on (dotf's)")
    ap.add_argument("--context", default="512", help="the GPU context the steps were timed at")
    ap.add_argument("--out", help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    if not args.cpu and not args.quant:
        ap.error("give --cpu (asd's projection) or --quant (the quantized draft's), or both")
    gpu = json.load(open(args.gpu))
    lines = [] if not args.cpu else [f"Projected decode-phase speedup of asd over AR on {gpu['device']} (CUDA graphs, context "
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
    if args.quant:
        lines += ([""] if lines else []) + quant_lines(gpu, args.quant, args.context)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
