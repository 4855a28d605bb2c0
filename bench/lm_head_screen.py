"""How many vocabulary rows a lossless int8 screen of the LM head leaves to compute in full precision.

Greedy decoding needs only the argmax of the logits. With the LM head also held as int8 per output row
(W ~ s_j q_j, |W_jk - s_j q_jk| <= s_j / 2), every int8 logit is within b_j = s_j / 2 * ||x||_1 of the
exact one, so only rows with l8_j + b_j >= max_i (l8_i - b_i) can be the argmax; computing just those rows
(their 16-column panels) in fp32 gives exactly the full head's argmax. This script measures, teacher-forced
on the tokens plain greedy decoding produces for real prompts, how many rows (and 16-row panels) that
worst-case bound keeps, and checks that the true argmax is always among them. (float64 here; a kernel must
also bound its own activation rounding and fp32 summation, a few orders of magnitude smaller.)

    python bench/lm_head_screen.py --model smollm2-135m [--prompts 2] [--new-tokens 32]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, task_prompts  # noqa: E402

import dotf  # noqa: E402
from dotf.checkpoints import checkpoint_dir  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=2, help="validation prompts per task")
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    machine()  # prints the CPU and its kernel-choosing features
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    m = dotf.load(args.model, dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir(args.model)), dtype=torch.float32)
    w = hf.get_output_embeddings().weight.detach().double()  # [V, C]
    s = w.abs().amax(1) / 127.0
    wq = torch.round(w / s[:, None]).clamp(-127, 127) * s[:, None]
    rows, panels = [], []
    for task in ("summarize", "code", "chat"):
        task_rows = []
        for _, ids in task_prompts(m.tokenizer, task, args.prompts):
            new = m.generate(ids, max_new_tokens=args.new_tokens, strategy="ar").tokens
            seq = torch.tensor(list(ids) + new).unsqueeze(0)
            with torch.no_grad():
                hidden = hf.model(seq).last_hidden_state[0, len(ids) - 1:-1].double()  # the positions that chose `new`
            for x in hidden:
                approx = wq @ x
                bound = s / 2 * x.abs().sum()
                keep = (approx + bound >= (approx - bound).max()).nonzero().flatten()
                if int((w @ x).argmax()) not in keep.tolist():
                    raise AssertionError("the screen dropped the argmax")
                task_rows.append(keep.numel())
                panels.append(torch.unique(keep // 16).numel())
        rows += task_rows
        print(f"{task:10s} positions {len(task_rows):4d}  rows kept: median {statistics.median(task_rows):.0f}, "
              f"max {max(task_rows)}", flush=True)
    p = sorted(panels)
    print(f"{args.model}: vocab {w.shape[0]} ({-(-w.shape[0] // 16)} panels of 16), hidden {w.shape[1]}; over "
          f"{len(rows)} positions rows kept mean {statistics.mean(rows):.1f}, panels mean {statistics.mean(p):.1f}, "
          f"p90 {p[int(0.9 * len(p))]}, max {p[-1]}; the argmax was always kept. Bytes of the head per step: "
          f"fp32 {w.numel() * 4 / 1e6:.0f} MB -> int8 {w.numel() / 1e6:.0f} MB + {statistics.mean(p):.1f} fp32 "
          f"panels ({statistics.mean(p) * 16 * w.shape[1] * 4 / 1e3:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
