"""Weight-only quantized GEMV timings on the GPU (dotf._C.testing.ops.quant_linear: int8 per output
channel, int4 in groups of 128) for every linear shape of a model, next to the dense linear
(torch.nn.functional.linear: cuBLAS) in the model's dtype, with the bandwidth each reaches.

    python3 bench/quant_gemv_bench.py --out quant_gemv.json [--models llama2-7b,llama2-13b] [--ms 1,9,16]

gpu_step_bench.py runs it for each model (the "quant_gemv" entry) and derives a draft step per context
from it ("draft_int8_kernels", "draft_int4_kernels"): the measured full graphed step with each
linear's dense time replaced by its quantized time (M = 1, every layer, the LM head included). That is
an estimate from kernel timings, not a measured step; a measured quantized draft step would be
"draft_int8"/"draft_int4" with "graphed_seconds" (what bench/gpu_projection.py looks for).

Bytes per call: the weights (quantized values + scales, or the dense weight) and x and y, divided by
the GPU time of back-to-back calls (CUDA events), as a fraction of the measured device-to-device copy
bandwidth (read + write; as gpu_step_bench's roofline). Calls cycle through enough copies of a weight
(>= 4x the L2 cache) that every call reads it from HBM.
"""
from __future__ import annotations

import argparse
import sys

import torch

from dotf import _C

ops = _C.testing.ops
SCHEMES = {"int8": (8, 0), "int4": (4, 128)}


def linear_shapes(s) -> dict[str, tuple[int, int, int]]:
    """name -> (N, K, calls per step) for dotf's fused linears (model/weights.h: qkv, o, gate_up, down, head)."""
    C, I = s.hidden_size, s.intermediate_size
    Q, KV = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    L = s.num_layers
    return {"qkv": (Q + 2 * KV, C, L), "o": (C, Q, L), "gate_up": (2 * I, C, L), "down": (C, I, L),
            "lm_head": (s.vocab_size, C, 1)}


def timed(fn_of_copy, copies: int, iters: int) -> float:
    """GPU seconds per call, cycling through `copies` weight copies (events around back-to-back calls)."""
    for i in range(3):
        fn_of_copy(i % copies)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(iters):
        fn_of_copy(i % copies)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def bench_shape(n: int, k: int, dtype: torch.dtype, ms: list[int], iters: int, bandwidth: float, l2_bytes: int) -> dict:
    dev = torch.device("cuda")
    e = torch.finfo(dtype).bits // 8
    def copies_for(nbytes: int) -> int:
        return max(2, -(-4 * l2_bytes // nbytes))

    dense = [torch.empty(n, k, device=dev, dtype=dtype).normal_(0.0, 0.02) for _ in range(copies_for(n * k * e))]
    variants = {"dense": (dense, n * k * e)}
    for name, (bits, group) in SCHEMES.items():
        q0 = ops.quantize_weight(dense[0], bits, group or 128)
        qs = [q0] + [ops.quantize_weight(dense[i % len(dense)], bits, group or 128)
                     for i in range(1, copies_for(q0.nbytes))]
        variants[name] = (qs, q0.nbytes)
    out = {"N": n, "K": k, "copies": {v: len(ws) for v, (ws, _) in variants.items()},
           "bytes": {v: b for v, (_, b) in variants.items()}, "M": {}}
    for m in ms:
        x = torch.randn(m, k, device=dev).to(dtype)
        row = {}
        for name, (ws, wbytes) in variants.items():
            if name == "dense":
                seconds = timed(lambda i: torch.nn.functional.linear(x, ws[i]), len(ws), iters)
            else:
                seconds = timed(lambda i: ops.quant_linear(x, ws[i]), len(ws), iters)
            nbytes = wbytes + (m * k + m * n) * e
            row[name] = {"seconds": seconds, "bytes_per_second": nbytes / seconds,
                         "bandwidth_fraction": nbytes / seconds / bandwidth}
        for name in SCHEMES:
            row[name]["speedup_vs_dense"] = row["dense"]["seconds"] / row[name]["seconds"]
        out["M"][str(m)] = row
    del dense, variants
    torch.cuda.empty_cache()
    return out


def bench_model_linears(name: str, s, ms: list[int], iters: int, bandwidth: float) -> dict:
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    result = {}
    for lin, (n, k, calls) in linear_shapes(s).items():
        r = bench_shape(n, k, s.dtype, ms, iters, bandwidth, l2)
        r["calls_per_step"] = calls
        result[lin] = r
        print(f"[{name}] {lin} {n}x{k}: " + "; ".join(
            f"M={m}: " + ", ".join(f"{v} {row[v]['seconds'] * 1e6:.1f} us ({100 * row[v]['bandwidth_fraction']:.0f}%)"
                                   for v in ("dense", *SCHEMES))
            for m, row in r["M"].items()), flush=True)
    return result


def draft_step_estimates(linears: dict, decode_graphed_seconds: float) -> dict:
    """Per scheme: the full graphed step with every linear's dense M = 1 time replaced by the scheme's."""
    out = {}
    for scheme in SCHEMES:
        dense = sum(r["M"]["1"]["dense"]["seconds"] * r["calls_per_step"] for r in linears.values())
        quant = sum(r["M"]["1"][scheme]["seconds"] * r["calls_per_step"] for r in linears.values())
        est = decode_graphed_seconds - dense + quant
        out["draft_" + scheme + "_kernels"] = {
            "estimated_seconds": est, "cost_vs_decode": est / decode_graphed_seconds,
            "linear_seconds_dense": dense, "linear_seconds_quantized": quant,
            "method": "measured graphed full step - sum of dense M=1 linear times + sum of quantized ones"}
    return out


def main(argv=None) -> int:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from gpu_step_bench import SHAPES, copy_bandwidth, write_report  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="llama2-7b,llama2-13b")
    ap.add_argument("--ms", default="1,9,16", help="rows of x (comma-separated)")
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or not _C.build_info()["cuda"]:
        print("quant_gemv_bench: needs a CUDA device and a CUDA build of dotf", file=sys.stderr)
        return 2
    bandwidth = copy_bandwidth(torch.device("cuda"))
    report = {"device": torch.cuda.get_device_name(), "copy_bandwidth_bytes_per_second": bandwidth, "models": {}}
    ms = [int(m) for m in args.ms.split(",") if m]
    for name in [m for m in args.models.split(",") if m]:
        report["models"][name] = bench_model_linears(name, SHAPES[name], ms, args.iters, bandwidth)
        write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
