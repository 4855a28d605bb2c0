"""Where a greedy call's time goes, dotf AR against llama.cpp's plain decode, on the benchmark's prompts.

    python bench/llama_cpp_breakdown.py --model smollm2-135m --prompts 2 --out bench/results/llama_cpp-smollm2

Per prompt, interleaved (dotf AR, then llama.cpp; --repeats times), on one thread count:
  - dotf AR: its prefill and its decode (the call minus the prefill), from its stats;
  - llama.cpp through llama-cpp-python's generate(): the time to the first new token (prefill) and the rest
    (decode), timed around the Python generator as bench/decode.py does;
  - llama.cpp's own counters for the same call (llama_perf_context: the time inside llama_decode for the
    prompt batch and for the one-token steps), so that the decode time splits into the forward passes and
    what lies around them (llama-cpp-python's loop and its sampler chain over the whole vocabulary);
  - for each forward, the bytes a decode step must read (weights and KV cache, bench/common.py) over its
    time: the bandwidth each implementation reaches, beside the matvec roofline measured before each prompt.
Writes breakdown.json and breakdown.md into --out.
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
from common import decode_bytes_per_token, machine, matvec_bandwidth_gbs, task_prompts  # noqa: E402
from llama_cpp_peer import LlamaCppPeer  # noqa: E402

import dotf  # noqa: E402


def llama_counters(peer: LlamaCppPeer) -> dict:
    llm = peer.models["llama_cpp"]
    d = peer.llama_cpp.llama_perf_context(llm._ctx.ctx)
    return {"prompt_eval_seconds": d.t_p_eval_ms / 1e3, "prompt_evals": d.n_p_eval,
            "eval_seconds": d.t_eval_ms / 1e3, "evals": d.n_eval}


def one_prompt(model, peer, ids, new_tokens, bandwidth) -> dict:
    n = new_tokens - 1  # decode steps after the token the prefill decides
    res = model.generate(ids, max_new_tokens=new_tokens, strategy="ar")
    ar_prefill, ar_total = res.stats["prefill_seconds"], res.stats["seconds"]
    llm = peer.models["llama_cpp"]
    peer.llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    r = peer.generate("llama_cpp", ids, new_tokens)
    c = llama_counters(peer)
    bytes_per_step = decode_bytes_per_token(model, len(ids) + new_tokens // 2)
    ar_decode = ar_total - ar_prefill
    ll_decode = r["seconds"] - r["stats"]["prefill_seconds"]
    return {
        "prompt_tokens": len(ids), "same_tokens": r["tokens"] == res.tokens, "matvec_gbs": bandwidth,
        "dotf_ar": {"prefill_seconds": ar_prefill, "decode_seconds": ar_decode, "decode_tokens_per_second": n / ar_decode,
                    "decode_gbs": bytes_per_step * n / ar_decode / 1e9},
        "llama_cpp": {"prefill_seconds": r["stats"]["prefill_seconds"], "decode_seconds": ll_decode,
                      "decode_tokens_per_second": n / ll_decode, "counters": c,
                      # the one-token forwards alone: llama_decode's time for them
                      "forward_tokens_per_second": c["evals"] / c["eval_seconds"] if c["eval_seconds"] else None,
                      "forward_gbs": bytes_per_step * c["evals"] / c["eval_seconds"] / 1e9 if c["eval_seconds"] else None,
                      # per decoded token, the time outside llama_decode (Python loop, sampler chain)
                      "outside_forward_ms_per_token": 1e3 * (ll_decode - c["eval_seconds"]) / n},
    }


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"model {meta['model']}, {meta['dtype']}, {meta['new_tokens']} new tokens, {meta['threads']} thread(s), "
             f"{meta['machine']['cpu']}; llama.cpp: {meta['llama_cpp']['gguf_type'].upper()} GGUF, "
             f"{meta['llama_cpp']['system_info']}", "",
             "| task | prompt | prompt tokens | dotf AR prefill ms | llama.cpp prefill ms (llama_decode) | "
             "dotf AR decode tok/s | llama.cpp decode tok/s | llama.cpp forwards alone, tok/s | llama.cpp outside "
             "the forward, ms/token | dotf AR GB/s | llama.cpp forward GB/s | matvec GB/s | same tokens |",
             "|" + "---|" * 13]
    for r in rows:
        a, b = r["dotf_ar"], r["llama_cpp"]
        lines.append("| " + " | ".join([
            r["task"], r["prompt"], str(r["prompt_tokens"]), f"{1e3 * a['prefill_seconds']:.0f}",
            f"{1e3 * b['prefill_seconds']:.0f} ({1e3 * b['counters']['prompt_eval_seconds']:.0f})",
            f"{a['decode_tokens_per_second']:.1f}", f"{b['decode_tokens_per_second']:.1f}",
            f"{b['forward_tokens_per_second']:.1f}", f"{b['outside_forward_ms_per_token']:.2f}",
            f"{a['decode_gbs']:.1f}", f"{b['forward_gbs']:.1f}", f"{r['matvec_gbs']:.1f}",
            "yes" if r["same_tokens"] else "NO"]) + " |")
    med = lambda f: statistics.median(f(r) for r in rows)  # noqa: E731
    lines += ["", f"medians: dotf AR decode {med(lambda r: r['dotf_ar']['decode_tokens_per_second']):.1f} tok/s, "
              f"llama.cpp decode {med(lambda r: r['llama_cpp']['decode_tokens_per_second']):.1f} tok/s "
              f"(its forwards alone {med(lambda r: r['llama_cpp']['forward_tokens_per_second']):.1f} tok/s, "
              f"{med(lambda r: r['llama_cpp']['outside_forward_ms_per_token']):.2f} ms/token outside them); "
              f"prefill dotf AR {med(lambda r: 1e3 * r['dotf_ar']['prefill_seconds']):.0f} ms, llama.cpp "
              f"{med(lambda r: 1e3 * r['llama_cpp']['prefill_seconds']):.0f} ms.", "",
             "decode: the call minus its prefill (llama.cpp: minus the time to its first new token), over the "
             "new tokens after the first. forwards alone: llama_perf_context's time inside llama_decode for the "
             "one-token steps. GB/s: the bytes a decode step reads (weights + KV cache at the prompt's mean "
             "context, in the model dtype) over the time of a step."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="summarize,code,chat")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = dotf.load(args.model, dtype=getattr(torch, args.dtype))
    peer = LlamaCppPeer(model.source_dir, args.dtype, args.threads)
    rows = []
    for task in args.tasks.split(","):
        for pid, ids in task_prompts(model.tokenizer, task, args.prompts):
            model.generate(ids[:8], max_new_tokens=4, strategy="ar")  # warm-up
            peer.generate("llama_cpp", ids[:8], 4)
            for rep in range(args.repeats):
                row = one_prompt(model, peer, ids, args.new_tokens, matvec_bandwidth_gbs(model.dtype))
                row.update(task=task, prompt=pid, repeat=rep)
                rows.append(row)
                print(f"{task:9s} {pid:18s} dotf AR {row['dotf_ar']['decode_tokens_per_second']:5.1f} tok/s, "
                      f"llama.cpp {row['llama_cpp']['decode_tokens_per_second']:5.1f} "
                      f"(forwards {row['llama_cpp']['forward_tokens_per_second']:5.1f}) tok/s", flush=True)
    meta = {"model": args.model, "dtype": args.dtype, "new_tokens": args.new_tokens, "threads": args.threads,
            "machine": machine(), "llama_cpp": peer.info(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    md = markdown(meta, rows)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "breakdown.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (out / "breakdown.md").write_text(md)


if __name__ == "__main__":
    main()
