"""Shared pieces of the benchmarks: prompts per task, machine facts, memory-bandwidth roofline."""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch

TASKS = ("summarize", "code", "chat")


def task_prompts(tokenizer, task: str, n: int, split: str = "validation") -> list[tuple[str, list[int]]]:
    """(id, token ids) of n real prompts. Summaries come from aclsum val (train is for tuning)."""
    from dotf import data
    data.ensure_installed()
    if task == "summarize":
        items, chat = data.summarize_prompts(n, split=split), True
    elif task == "code":
        items, chat = data.humaneval_prompts(None)[-n:], False  # the last problems: the tests use the first
    elif task == "chat":
        items, chat = data.sharegpt_first_turns(n, seed=1), True
    else:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return [(item["id"], data.encode_prompt(tokenizer, item, chat=chat)) for item in items]


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def matvec_bandwidth_gbs(dtype=torch.float32, rows: int = 8192, cols: int = 4096, copies: int = 4,
                         reps: int = 5) -> float:
    """GB/s of a large matrix-vector product on this thread count: the practical decode roofline.
    Several matrices are rotated so that none sits in the last-level cache."""
    mats = [torch.randn(rows, cols, dtype=dtype) for _ in range(copies)]
    x = torch.randn(cols, dtype=dtype)
    for m in mats:
        torch.mv(m, x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for m in mats:
            torch.mv(m, x)
        times.append((time.perf_counter() - t0) / copies)
    return mats[0].numel() * mats[0].element_size() / statistics.median(times) / 1e9


def decode_bytes_per_token(model, context: int) -> int:
    """Bytes a decode step reads: all weights except the embedding table (one row is gathered)
    unless it doubles as the LM head, plus the KV cache at this context length."""
    c = model.config
    weight = model._impl.weight_bytes
    elem = torch.tensor([], dtype=model.dtype).element_size()
    if not c.tie_word_embeddings:
        weight -= c.vocab_size * c.hidden_size * elem
    kv = 2 * c.num_layers * context * c.num_kv_heads * c.head_dim * elem
    return weight + kv
