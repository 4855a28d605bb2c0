"""GPU step benchmark: full decode step, draft step and verify of k+1 tokens on random-weight models
of realistic shapes, eager and replayed from CUDA graphs, with tok/s and the fraction of the HBM
roofline each step reaches.

    python3 bench/gpu_step_bench.py --out results.json [--models smollm2-135m,llama2-7b,...]
                                    [--contexts 512,2048] [--ks 4,8,12] [--iters 30]

Models are built directly from random tensors generated on the GPU (no checkpoint, no host copy)
with dotf._C.Model(config, tensors, dtype, device, max_seq_len); the KV cache is filled with random
rows up to the context length instead of running a prefill. Steps are timed as the decoder runs
them: forward + argmax_top1 + a host read of the token (one synchronisation per step); the
"pipelined" figure launches steps back to back and synchronises once (launch overhead hidden
behind the GPU where the host keeps ahead). "graphed" runs the same steps through
dotf._C.testing.GraphedForward (what generate() uses on CUDA): one input copy + one graph replay per step.
"sampling": the token choice alone, greedy's argmax against sampling's warp + draw and warp + acceptance
test (ops/sample.h), on random logits of each model's vocabulary.
Per-step overhead = 1 - (GPU time per step) / (step time), with the GPU time taken from graph
replays launched back to back (the host is then far ahead, so the GPU never waits).

Quantized draft: after the steps of every model, the int8/int4 GEMVs of its linear shapes are timed
against the dense linears at M = --quant-ms (bench/quant_gemv_bench.py: the "quant_gemv" entry, GB/s
as a fraction of the copy bandwidth), and each context gets "draft_int8_kernels"/"draft_int4_kernels":
the graphed full step with the dense linear times replaced by the quantized ones (an estimate from
kernel timings, not a measured step; bench/gpu_projection.py reads measured steps as "draft_int8").

Roofline: bytes a step must move (the weights of the sublayers it runs + the LM head, the KV rows
its attention layers read and write; embedding rows and activations are negligible) divided by the
step time, as a fraction of the measured device-to-device copy bandwidth (read + write bytes).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass

import torch

import dotf
from dotf import _C
from quant_gemv_bench import bench_model_linears, draft_step_estimates  # bench/ is on sys.path when run


@dataclass(frozen=True)
class Shape:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qkv_bias: bool
    dtype: torch.dtype


SHAPES = {
    # HuggingFaceTB/SmolLM2-135M config.json (the CPU benchmarks' model), bf16 as a GPU would run it
    "smollm2-135m": Shape("llama", 49152, 576, 1536, 30, 9, 3, 64, 8192, 1e-5, 100000.0, True, False,
                          torch.bfloat16),
    # meta-llama/Llama-2-7b-hf config.json
    "llama2-7b": Shape("llama", 32000, 4096, 11008, 32, 32, 32, 128, 4096, 1e-5, 10000.0, False, False,
                       torch.float16),
    # meta-llama/Llama-2-13b-hf config.json
    "llama2-13b": Shape("llama", 32000, 5120, 13824, 40, 40, 40, 128, 4096, 1e-5, 10000.0, False, False,
                        torch.float16),
    # Qwen/Qwen2.5-1.5B config.json
    "qwen2.5-1.5b": Shape("qwen2", 151936, 1536, 8960, 28, 12, 2, 128, 32768, 1e-6, 1000000.0, True, True,
                          torch.bfloat16),
}


def model_config(s: Shape):
    """A _C.ModelConfig filled as python/dotf/loading.py:parse_config fills it."""
    c = _C.ModelConfig()
    for name in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                 "tie_word_embeddings"):
        setattr(c, name, getattr(s, name))
    c.validate()
    return c


def random_tensors(s: Shape, device: torch.device, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Hugging Face state-dict names -> random tensors made on the device in the model dtype."""
    def rnd(*shape):
        return torch.empty(shape, device=device, dtype=s.dtype).normal_(0.0, std)

    def ones(n):
        return torch.ones(n, device=device, dtype=s.dtype)

    C, I, V = s.hidden_size, s.intermediate_size, s.vocab_size
    Q, KV = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    t = {"model.embed_tokens.weight": rnd(V, C), "model.norm.weight": ones(C)}
    if not s.tie_word_embeddings:
        t["lm_head.weight"] = rnd(V, C)
    for i in range(s.num_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ones(C)
        t[p + "post_attention_layernorm.weight"] = ones(C)
        t[p + "self_attn.q_proj.weight"] = rnd(Q, C)
        t[p + "self_attn.k_proj.weight"] = rnd(KV, C)
        t[p + "self_attn.v_proj.weight"] = rnd(KV, C)
        t[p + "self_attn.o_proj.weight"] = rnd(C, Q)
        if s.qkv_bias:
            t[p + "self_attn.q_proj.bias"] = rnd(Q)
            t[p + "self_attn.k_proj.bias"] = rnd(KV)
            t[p + "self_attn.v_proj.bias"] = rnd(KV)
        t[p + "mlp.gate_proj.weight"] = rnd(I, C)
        t[p + "mlp.up_proj.weight"] = rnd(I, C)
        t[p + "mlp.down_proj.weight"] = rnd(C, I)
    return t


def build_model(s: Shape, device: torch.device, max_seq_len: int):
    tensors = random_tensors(s, device)
    model = _C.Model(model_config(s), tensors, s.dtype, device, max_seq_len)
    # The fused QKV / gate_up copies now live in the model; drop the unfused originals.
    del tensors
    torch.cuda.empty_cache()
    return model


def fill_cache(model, s: Shape, capacity: int, context: int):
    cache = model.new_cache(capacity)
    cache.append(context)
    for layer in range(s.num_layers):
        cache.keys(layer)[:context].normal_()
        cache.values(layer)[:context].normal_()
    return cache


# ---- bytes a step moves ------------------------------------------------------------------------
def step_bytes(s: Shape, attention_layers: int, context: int, tokens: int) -> dict[str, int]:
    e = torch.finfo(s.dtype).bits // 8
    C, I, V = s.hidden_size, s.intermediate_size, s.vocab_size
    Q, KV = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    attn = ((Q + 2 * KV) * C + Q * C + C + ((Q + 2 * KV) if s.qkv_bias else 0)) * e
    mlp = (3 * I * C + C) * e
    head = (V * C + C) * e
    weights = attention_layers * attn + s.num_layers * mlp + head
    kv = attention_layers * 2 * (context + tokens) * KV * e  # read rows [0, context + T), write T of them
    return {"weights": weights, "kv": kv, "total": weights + kv}


# ---- timing ------------------------------------------------------------------------------------
def gpu_seconds(fn, iters: int) -> float:
    """GPU time per call of fn over `iters` calls launched back to back (CUDA events, after 3 warm-up
    calls); for graph replays the host stays far ahead, so this is the GPU's own time."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, iters: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting read + write."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    seconds = gpu_seconds(lambda: dst.copy_(src), iters)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / seconds


def time_step(fn, iters: int, warmup: int = 3) -> dict[str, float]:
    """fn() runs one step and returns a device tensor; `synced` reads it to the host every step."""
    for _ in range(warmup):
        fn().cpu()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn().cpu()  # the decoder reads each step's token before the next step
    synced = (time.perf_counter() - t0) / iters
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        out = fn()
    torch.cuda.synchronize()
    pipelined = (time.perf_counter() - t0) / iters
    del out
    return {"seconds": synced, "pipelined_seconds": pipelined}


def kernel_breakdown(fn, steps: int = 5, top: int = 15) -> list[dict]:
    """GPU time per step of each CUDA kernel fn launches (torch.profiler over `steps` calls), largest
    first: where a step's time goes beyond its bytes (small kernels, GEMMs below bandwidth)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    def device_us(e) -> float:
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    events = list(prof.key_averages())
    kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    rows = [{"kernel": e.key[:120], "calls_per_step": e.count / steps, "us_per_step": device_us(e) / steps}
            for e in (kernels or [e for e in events if device_us(e) > 0])]
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:top]


def bench_model(name: str, s: Shape, device: torch.device, contexts: list[int], ks: list[int], iters: int,
                bandwidth: float, kernels: bool = True) -> dict:
    max_k = max(ks)
    capacity = max(contexts) + max_k + 2
    t0 = time.perf_counter()
    model = build_model(s, device, capacity)
    torch.cuda.synchronize()
    build_seconds = time.perf_counter() - t0
    L = s.num_layers
    full = [True] * L
    half = [i % 2 == 0 for i in range(L)]  # draft: skip every other attention sublayer (layer 0 kept)
    skipped = L - sum(half)
    g = torch.Generator().manual_seed(0)
    result = {
        "dtype": str(s.dtype).replace("torch.", ""), "shape": {k: v for k, v in s.__dict__.items() if k != "dtype"},
        "weight_bytes": model.weight_bytes, "build_seconds": build_seconds, "draft_skipped_attention": skipped,
        "contexts": {},
    }
    print(f"[{name}] built in {build_seconds:.1f} s, {model.weight_bytes / 2**30:.2f} GiB of weights; "
          f"GPU memory {torch.cuda.memory_allocated() / 2**30:.1f} GiB", flush=True)
    graphs = _C.testing.GraphedForward(model, max_tokens=max_k + 1)

    for ctx in contexts:
        cache = fill_cache(model, s, capacity, ctx)
        tok1 = torch.randint(0, s.vocab_size, (1,), generator=g)

        def eager(tokens, plan, rows, with_prob):
            def fn():
                logits, _, _ = model.forward(tokens, ctx, cache, plan, full, similarity=False, logits=rows)
                return _C.testing.ops.argmax_top1(logits, with_prob)[0]
            return fn

        def graphed(tokens, plan, rows, with_prob, replay_only=False):
            ids = tokens.tolist()

            def fn():
                logits, _, _ = graphs.forward(ids, ctx, cache, plan, full, False, rows)
                return logits if replay_only else _C.testing.ops.argmax_top1(logits, with_prob)[0]
            return fn

        def measure(tokens, plan, rows, with_prob, layers):
            e = time_step(eager(tokens, plan, rows, with_prob), iters)
            gr = time_step(graphed(tokens, plan, rows, with_prob), iters)
            gpu = gpu_seconds(graphed(tokens, plan, rows, with_prob, replay_only=True), iters)
            b = step_bytes(s, layers, ctx, tokens.numel())
            return {**e, "tokens_per_second": tokens.numel() / e["seconds"], "bytes": b,
                    "roofline_fraction": b["total"] / e["seconds"] / bandwidth,
                    "pipelined_roofline_fraction": b["total"] / e["pipelined_seconds"] / bandwidth,
                    "graphed_seconds": gr["seconds"], "graphed_pipelined_seconds": gr["pipelined_seconds"],
                    "graphed_tokens_per_second": tokens.numel() / gr["seconds"],
                    "graphed_roofline_fraction": b["total"] / gr["seconds"] / bandwidth,
                    "gpu_seconds": gpu, "gpu_roofline_fraction": b["total"] / gpu / bandwidth,
                    "eager_overhead_fraction": 1.0 - gpu / e["seconds"],
                    "graphed_overhead_fraction": 1.0 - gpu / gr["seconds"],
                    "graph_speedup": e["seconds"] / gr["seconds"]}

        entry = {"decode": measure(tok1, full, "last", False, L), "draft": measure(tok1, half, "last", True, L - skipped),
                 "verify": {}}
        for k in ks:
            toks = torch.randint(0, s.vocab_size, (k + 1,), generator=g)
            v = measure(toks, full, "all", False, L)
            v["tokens"] = k + 1
            v["cost_vs_decode"] = v["seconds"] / entry["decode"]["seconds"]
            v["graphed_cost_vs_decode"] = v["graphed_seconds"] / entry["decode"]["graphed_seconds"]
            entry["verify"][str(k)] = v
        d, dr = entry["decode"], entry["draft"]
        dr["cost_vs_decode"] = dr["seconds"] / d["seconds"]
        dr["graphed_cost_vs_decode"] = dr["graphed_seconds"] / d["graphed_seconds"]
        # Speculative speedup (standard formula) for a few acceptance rates p, k drafts per round:
        # E[tokens] = (1 - p^(k+1)) / (1 - p); cost = k * draft + verify(k+1), in decode steps (graphed).
        entry["predicted_speedup"] = {
            f"p={p},k={k}": ((1 - p ** (k + 1)) / (1 - p))
            / (k * dr["graphed_cost_vs_decode"] + entry["verify"][str(k)]["graphed_cost_vs_decode"])
            for p in (0.6, 0.8, 0.9) for k in ks}
        entry["attention_op"] = bench_attention(model, s, cache, ctx, ks, iters, bandwidth)
        if kernels and ctx == contexts[0]:  # eager steps: the kernels a graph replays, one by one
            entry["kernels"] = {"decode": kernel_breakdown(eager(tok1, full, "last", False)),
                                f"verify_k{max_k}": kernel_breakdown(eager(
                                    torch.randint(0, s.vocab_size, (max_k + 1,), generator=g), full, "all", False))}
            top = entry["kernels"]["decode"][:4]
            print(f"[{name}] decode kernels (us/step): "
                  + "; ".join(f"{r['kernel'][:48]} x{r['calls_per_step']:.0f} {r['us_per_step']:.0f}" for r in top),
                  flush=True)
        result["contexts"][str(ctx)] = entry
        print(f"[{name}] ctx {ctx}: decode eager {d['seconds'] * 1e3:.3f} ms ({100 * d['roofline_fraction']:.0f}% "
              f"roofline), graphed {d['graphed_seconds'] * 1e3:.3f} ms ({d['graphed_tokens_per_second']:.0f} tok/s, "
              f"{100 * d['graphed_roofline_fraction']:.0f}%; GPU {d['gpu_seconds'] * 1e3:.3f} ms, overhead "
              f"{100 * d['eager_overhead_fraction']:.0f}% -> {100 * d['graphed_overhead_fraction']:.1f}%); "
              f"draft {dr['graphed_seconds'] * 1e3:.3f} ms ({dr['graphed_cost_vs_decode']:.2f}x, bytes "
              f"{dr['bytes']['total'] / d['bytes']['total']:.2f}x); verify "
              + ", ".join(f"k={k}: {v['graphed_seconds'] * 1e3:.3f} ms ({v['graphed_cost_vs_decode']:.2f}x)"
                          for k, v in entry["verify"].items()), flush=True)
        del cache
        graphs.clear()
    result["graph_stats"] = graphs.stats
    del graphs, model
    torch.cuda.empty_cache()
    return result


def bench_attention(model, s: Shape, cache, ctx: int, ks: list[int], iters: int, bandwidth: float) -> dict:
    """The attention kernel alone on layer 0's slab: T = 1 and T = k + 1 queries at position ctx."""
    e = torch.finfo(s.dtype).bits // 8
    k_slab, v_slab = cache.keys(0), cache.values(0)
    scale = 1.0 / math.sqrt(s.head_dim)
    out = {}
    for T in sorted({1, *(k + 1 for k in ks)}):
        q = torch.randn(T, s.num_heads, s.head_dim, device=k_slab.device).to(s.dtype)
        seconds = gpu_seconds(lambda: _C.testing.ops.attention_with_cache(q, k_slab, v_slab, ctx, scale), iters)
        nbytes = 2 * (ctx + T) * s.num_kv_heads * s.head_dim * e
        out[str(T)] = {"seconds": seconds, "kv_bytes": nbytes, "roofline_fraction": nbytes / seconds / bandwidth}
    return out


def bench_sampling(s: Shape, device: torch.device, ks: list[int], iters: int) -> dict:
    """The token choice alone on random logits of the model's vocabulary and dtype, GPU time per call:
    greedy (argmax_top1) against sampling (the warp at temperature 0.7, top-p 0.9, then the draw) for one
    row, and for k + 1 verify rows the warp + the speculative acceptance test against k draft rows."""
    ops = _C.testing.ops
    warp = (0.7, 0, 0.9, 0.0)
    out = {}
    for rows in sorted({1, *(k + 1 for k in ks)}):
        logits = (torch.randn(rows, s.vocab_size, device=device) * 3).to(s.dtype)
        u = torch.rand(rows, dtype=torch.float64, device=device)
        q = ops.warped_probabilities(logits[: rows - 1], *warp)
        drafts = q.argmax(1) if rows > 1 else torch.zeros(0, dtype=torch.int64, device=device)
        lookup = torch.zeros(rows - 1, dtype=torch.bool, device=device)
        out[str(rows)] = {
            "argmax_seconds": gpu_seconds(lambda: ops.argmax_top1(logits, False), iters),
            "warp_seconds": gpu_seconds(lambda: ops.warped_probabilities(logits, *warp), iters),
            "warp_sample_seconds": gpu_seconds(lambda: ops.sample_rows(ops.warped_probabilities(logits, *warp), u),
                                               iters),
            "warp_accept_seconds": gpu_seconds(lambda: ops.speculative_accept(
                ops.warped_probabilities(logits, *warp), q, drafts, lookup, u), iters),
        }
    print(f"sampling step, V={s.vocab_size} (us, GPU): " + "; ".join(
        f"{r} rows: argmax {v['argmax_seconds'] * 1e6:.0f}, warp+draw {v['warp_sample_seconds'] * 1e6:.0f}, "
        f"warp+accept {v['warp_accept_seconds'] * 1e6:.0f}" for r, v in out.items()), flush=True)
    return out


def write_report(path: str, report: dict) -> None:
    """The JSON report, rewritten whole after each part so that a later failure keeps what was measured."""
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, of: {', '.join(SHAPES)}")
    ap.add_argument("--contexts", default="512,2048", help="KV context lengths (comma-separated)")
    ap.add_argument("--ks", default="4,8,12", help="draft lengths k; verify runs k+1 tokens")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-kernels", action="store_true", help="skip the per-kernel breakdown (torch.profiler)")
    ap.add_argument("--quant-ms", default="1,9,16",
                    help="rows of x for the quantized GEMV timings (bench/quant_gemv_bench.py); empty: skip them")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_step_bench: no CUDA device", file=sys.stderr)
        return 2
    if not _C.build_info()["cuda"]:
        print("gpu_step_bench: dotf was built without CUDA kernels", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    contexts = [int(x) for x in args.contexts.split(",") if x]
    ks = [int(x) for x in args.ks.split(",") if x]
    bandwidth = copy_bandwidth(device)
    props = torch.cuda.get_device_properties(device)
    print(f"device {props.name}: device-to-device copy {bandwidth / 1e9:.0f} GB/s (read + write)", flush=True)
    report = {
        "device": props.name, "sm_count": props.multi_processor_count, "memory_bytes": props.total_memory,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "dotf_build": {k: v for k, v in dotf.build_info().items() if isinstance(v, (str, bool, int, float))},
        "copy_bandwidth_bytes_per_second": bandwidth, "iters": args.iters, "models": {},
    }
    for name in [m for m in args.models.split(",") if m]:
        if name not in SHAPES:
            print(f"gpu_step_bench: unknown model {name!r} (known: {', '.join(SHAPES)})", file=sys.stderr)
            return 2
        s = SHAPES[name]
        usable = [c for c in contexts if c + max(ks) + 2 <= s.max_position_embeddings]
        report["models"][name] = bench_model(name, s, device, usable, ks, args.iters, bandwidth,
                                             kernels=not args.no_kernels)
        report["models"][name]["sampling"] = bench_sampling(s, device, ks, args.iters)
        write_report(args.out, report)  # after each model: a later failure keeps earlier results
    # The quantized GEMVs last, so a failure there keeps every step measured above.
    quant_ms = [int(m) for m in args.quant_ms.split(",") if m]
    for name, record in report["models"].items() if quant_ms else ():
        record["quant_gemv"] = linears = bench_model_linears(name, SHAPES[name], quant_ms, args.iters, bandwidth)
        for ctx, entry in record["contexts"].items():
            entry.update(draft_step_estimates(linears, entry["decode"]["graphed_seconds"]))
            print(f"[{name}] ctx {ctx}: draft step estimated from the quantized GEMVs: " + ", ".join(
                f"{key[6:10]} {v['estimated_seconds'] * 1e3:.3f} ms ({v['cost_vs_decode']:.2f}x)"
                for key, v in entry.items() if key.endswith("_kernels")), flush=True)
        write_report(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
