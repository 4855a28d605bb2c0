"""How often weight-only quantized self-drafts agree with the full model, with the CUDA draft schemes emulated.

    python bench/quant_draft_acceptance.py --model smollm2-135m --prompts 2 --out bench/results/quant_draft_acceptance

Schemes (every linear layer of the draft, the LM head included; embeddings, norms and the KV cache exact):
  int8      per output channel, symmetric: w ~ s_j * q, |q| <= 127, s_j = max_k |w_jk| / 127
  int4-sym  groups of 128 along the input dimension, symmetric: |q| <= 7, one fp16 scale per group
  int4-asym groups of 128, asymmetric: q in [0, 15], an fp16 scale and zero point per group
Activations stay float32 (the CUDA kernels take fp16/bf16 activations and accumulate in fp32; that rounding
is orders of magnitude below the weights').

Teacher-forced on held-out prompts (decode.py's sets): the full model generates --new-tokens greedily, then
every draft reads prompt + those tokens in one pass. Reported per position of the continuation:
  greedy agreement   the draft's argmax equals the full model's (a greedy draft token is kept)
  sampled acceptance 1 - TV(p, q) of the warped distributions (temperature 0.7, top-p 0.9): the mean
                     probability that a sampled draft token is kept (min(1, p/q) averaged over q)
and the projected speedup of a round at that acceptance (method.md: E[tokens] / (k c + v)) for the draft's
byte fraction c of a full step and a verify v = 1.15 steps, max over k <= 8: a projection, not a measurement.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TASKS, machine, task_prompts  # noqa: E402

SCHEMES = ("int8", "int4-sym", "int4-asym")


def quantize(w: torch.Tensor, scheme: str) -> torch.Tensor:
    """The dequantized weight [N, K] a draft kernel multiplies by, for w [N, K] float32."""
    if scheme == "int8":
        s = (w.abs().amax(1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).eps)
        return (w / s).round().clamp(-127, 127) * s
    n, k = w.shape
    pad = (-k) % 128
    g = torch.nn.functional.pad(w, (0, pad)).view(n, -1, 128)
    tiny = torch.finfo(torch.float16).tiny  # the fp16 scale of an all-zero group must not round to 0
    if scheme == "int4-sym":
        s = (g.abs().amax(2, keepdim=True) / 7).half().float().clamp_min(tiny)
        out = (g / s).round().clamp(-7, 7) * s
    else:
        lo, hi = g.amin(2, keepdim=True), g.amax(2, keepdim=True)
        s = ((hi - lo) / 15).half().float().clamp_min(tiny)
        z = (-lo / s).round().clamp(0, 15)
        out = ((g / s).round() + z).clamp(0, 15).sub(z) * s
    return out.view(n, -1)[:, :k]


def quantized_copy(model, scheme: str):
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for mod in draft.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(quantize(mod.weight.float(), scheme))
    return draft


def warped(logits: torch.Tensor, temperature=0.7, top_p=0.9, top_k=50) -> torch.Tensor:
    """transformers' warpers in its order, then softmax: [T, V] -> [T, V]."""
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,  # noqa: PLC0415
                                                        TopPLogitsWarper)
    x = logits.double()
    for w in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)):
        x = w(None, x)
    return x.softmax(-1)


def projected_speedup(acceptance: float, draft_cost: float, verify_cost: float = 1.15, max_draft: int = 8) -> float:
    best = 0.0
    for k in range(1, max_draft + 1):
        tokens = (1 - acceptance ** (k + 1)) / (1 - acceptance) if acceptance < 1 else k + 1
        best = max(best, tokens / (k * draft_cost + verify_cost))
    return best


def byte_fraction(model, scheme: str) -> float:
    """Bytes a draft step reads over a full fp16 step's (linear weights only; they dominate at batch 1)."""
    full = quant = 0.0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            n, k = mod.weight.shape
            full += 2 * n * k
            quant += n * k + 2 * n if scheme == "int8" else n * k / 2 + n * ((k + 127) // 128) * (2 if scheme == "int4-sym" else 3)
    return quant / full


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=2, help="held-out prompts per task")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info = machine()
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    from dotf import checkpoints  # noqa: PLC0415
    path = str(checkpoints.prepare(args.model))
    tok = AutoTokenizer.from_pretrained(path)
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        # The full model's continuations and warped distributions first; then one quantized copy at a
        # time, so a 1.5B model needs two copies of its weights in memory, not four.
        cases = []
        for task in TASKS:
            for pid, ids in task_prompts(tok, task, args.prompts):
                x = torch.tensor([ids])  # an explicit mask: none is inferred from the pad id
                seq = full.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.new_tokens, do_sample=False,
                                    eos_token_id=None, pad_token_id=0)
                span = slice(len(ids) - 1, seq.size(1) - 1)  # rows that predict the continuation
                ref = full(seq).logits[0, span]
                cases.append((task, pid, seq, span, ref.argmax(-1), warped(ref).to_sparse()))
        for s in SCHEMES:
            draft = quantized_copy(full, s)
            for task, pid, seq, span, ref_argmax, p_ref in cases:
                q = draft(seq).logits[0, span]
                agree = (q.argmax(-1) == ref_argmax).double().mean().item()
                accept = (1 - 0.5 * (warped(q) - p_ref.to_dense()).abs().sum(-1)).mean().item()
                rows.append({"task": task, "prompt": pid, "scheme": s, "greedy_agreement": agree,
                             "sampled_acceptance": accept})
                print(f"{task:9s} {pid:18s} {s:9s} greedy {agree:.3f} sampled {accept:.3f}", flush=True)
            del draft
    summary = {}
    for s in SCHEMES:
        mine = [r for r in rows if r["scheme"] == s]
        g = statistics.mean(r["greedy_agreement"] for r in mine)
        a = statistics.mean(r["sampled_acceptance"] for r in mine)
        c = byte_fraction(full, s)
        summary[s] = {"greedy_agreement": g, "sampled_acceptance": a, "byte_fraction": c,
                      "projected_speedup_greedy": projected_speedup(g, c), "projected_speedup_sampled": projected_speedup(a, c)}
    lines = [f"{args.model}: {len(rows) // len(SCHEMES)} held-out prompts x {args.new_tokens} teacher-forced positions; "
             f"{info['cpu']}", "",
             "| scheme | greedy agreement | sampled acceptance (T 0.7, top-p 0.9) | draft bytes / fp16 step | projected speedup, greedy | sampled |",
             "|---|---|---|---|---|---|"]
    for s, e in summary.items():
        lines.append(f"| {s} | {e['greedy_agreement']:.3f} | {e['sampled_acceptance']:.3f} | {e['byte_fraction']:.2f} | "
                     f"{e['projected_speedup_greedy']:.2f}x | {e['projected_speedup_sampled']:.2f}x |")
    lines.append("\nprojection: max over k <= 8 of E[tokens](a, k) / (k c + 1.15), c = the draft's byte fraction of a fp16 step "
                 "(weights only), a = the acceptance; a bandwidth-bound GPU model, not a measurement.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.model}.md").write_text(text)
        (out / f"{args.model}.json").write_text(json.dumps({"machine": info, "args": vars(args), "summary": summary,
                                                             "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
