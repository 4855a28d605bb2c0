"""Shared pieces of the benchmarks: prompts per task, machine facts, memory-bandwidth roofline, plots."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import dotf

import prompts

TASKS = ("summarize", "code", "chat")


def task_prompts(tokenizer, task: str, n: int, split: str = "validation",
                 tuning: bool = False) -> list[tuple[str, list[int]]]:
    """(id, token ids) of n real prompts. Benchmark prompts: aclsum val summaries, HumanEval's last problems
    (the tests use the first ten), ShareGPT first turns drawn with seed 1. tuning=True gives prompts none of
    those use, for choosing defaults: aclsum train, HumanEval from problem 20, ShareGPT with seed 7."""
    prompts.ensure_installed()
    if task == "summarize":
        items, chat = prompts.summarize_prompts(n, split="train" if tuning else split), True
    elif task == "code":
        problems = prompts.humaneval_prompts(None)
        items, chat = (problems[20:20 + n] if tuning else problems[-n:]), False
    elif task == "chat":
        items, chat = prompts.sharegpt_first_turns(n, seed=7 if tuning else 1), True
    else:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return [(item["id"], prompts.encode_prompt(tokenizer, item, chat=chat)) for item in items]


# CPU features that choose kernels (dotf's AVX2 paths; oneDNN's AVX-512, VNNI, BF16 and AMX paths).
CPU_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                "amx_int8")


def machine() -> dict:
    """The machine a benchmark ran on: CPU model and the kernel-choosing features it has, cores, threads,
    versions, time. Printed to stderr as well, so every benchmark's output says where it ran."""
    cpu, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_features": [f for f in CPU_FEATURES if f in flags], "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    for kernel in ("int8_linear_isa", "attention_isa", "int8_attention_isa"):  # chosen at run time on this CPU
        info[kernel] = dotf.build_info().get(kernel)
    print(f"[machine] {info['cpu']} | features: {' '.join(info['cpu_features']) or 'none of ' + ','.join(CPU_FEATURES)}"
          f" | int8 kernel: {info['int8_linear_isa']} | attention kernel: {info['attention_isa']}"
          f" (int8 mirror: {info['int8_attention_isa']})"
          f" | {info['cores']} cores, {info['threads']} threads | torch {info['torch']}", file=sys.stderr)
    return info


def _streaming_gbs(arrays: list[torch.Tensor], read, reps: int) -> float:
    """GB/s of read(a) over arrays rotated so that none sits in the last-level cache: one warm-up
    pass, then the median over reps passes of the per-array time."""
    for a in arrays:
        read(a)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for a in arrays:
            read(a)
        times.append((time.perf_counter() - t0) / len(arrays))
    return arrays[0].numel() * arrays[0].element_size() / statistics.median(times) / 1e9


def matvec_bandwidth_gbs(dtype=torch.float32, rows: int = 8192, cols: int = 4096, copies: int = 4,
                         reps: int = 5) -> float:
    """GB/s of a large matrix-vector product on this thread count: the practical decode roofline."""
    x = torch.randn(cols, dtype=dtype)
    return _streaming_gbs([torch.randn(rows, cols, dtype=dtype) for _ in range(copies)], lambda m: torch.mv(m, x),
                          reps)


def read_bandwidth_gbs(dtype=torch.float32, numel: int = 1 << 25, copies: int = 4, reps: int = 5) -> float:
    """GB/s of a plain streaming read (torch.sum): a second, stricter bound beside the matvec one,
    since a good kernel can read weights faster than MKL's GEMV."""
    return _streaming_gbs([torch.randn(numel, dtype=dtype) for _ in range(copies)], torch.sum, reps)


def decode_bytes_per_token(model, context: int) -> int:
    """Bytes a decode step must read: every linear weight once (in the model dtype; a packed layout
    holds the same numbers), the LM head, the norms, one embedding row, and the KV cache at this
    context length. Computed from the config, so that packed copies kept beside the originals
    (ModelWeights.nbytes) do not inflate it."""
    c = model.config
    elem = torch.tensor([], dtype=model.dtype).element_size()
    q, kv, C, I = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size, c.intermediate_size
    per_layer = C * (q + 2 * kv) + q * C + 3 * C * I + 2 * C
    weights = c.num_layers * per_layer + c.vocab_size * C + C + C
    kv_cache = 2 * c.num_layers * context * kv
    return (weights + kv_cache) * elem


def grouped_bar_chart(path: Path, groups: list[str], series: dict[str, list[float | None]], ylabel: str,
                      bar_labels: dict[str, list[str]] | None = None, reference: float | None = 1.0) -> bool:
    """Write a PNG with one cluster of bars per group and one bar per series in each cluster.

    series[name][i] is that series' value for groups[i] (None draws nothing); bar_labels, shaped like
    series, is text printed above each bar; reference draws a horizontal line (1.0: parity with the
    baseline). Plots are an extra beside the JSON and markdown outputs, so without matplotlib this
    says so and returns False instead of failing the benchmark."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed (see requirements.txt): skipped {path}", file=sys.stderr)
        return False
    width = 0.8 / len(series)
    long_names = max(len(g) for g in groups) > 12  # slant them so that neighbours do not overlap
    fig, ax = plt.subplots(figsize=(max(8.0, 0.3 * len(groups) * len(series)), 6 if long_names else 4))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar([j + i * width for j in range(len(groups))], [0 if v is None else v for v in values], width,
                      label=name)
        if bar_labels is not None:
            ax.bar_label(bars, labels=bar_labels[name], fontsize=6, rotation=90, padding=2)
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups,
                  rotation=45 if long_names else 0, ha="right" if long_names else "center",
                  fontsize=7 if long_names else None)
    ax.set_ylabel(ylabel)
    if bar_labels is not None:
        ax.margins(y=0.15)  # room for the labels above the tallest bar
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
