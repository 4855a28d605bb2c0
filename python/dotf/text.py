"""Text in, text out: prompts as strings or chat messages, incremental decoding that never splits a
character or a word-piece, and stop strings."""
from __future__ import annotations

import queue
import threading
import unicodedata
from typing import Any, Sequence


def is_messages(prompt: Any) -> bool:
    """A chat: a list of {"role": ..., "content": ...} dicts."""
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and all(isinstance(m, dict) for m in prompt)


def encode_prompt(tokenizer, prompt: str | Sequence[dict]) -> list[int]:
    """Token ids of a text prompt (the tokenizer's special tokens added as it adds them) or of chat messages
    (the checkpoint's chat template with the generation prompt, as transformers applies it)."""
    if tokenizer is None:
        raise TypeError(f"a text or chat prompt needs the checkpoint's tokenizer, and this one has none (or "
                        f"transformers is not installed): pass token ids (a list of ints or a 1-D integer tensor), "
                        f"got {type(prompt).__name__}")
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    for i, m in enumerate(prompt):
        if "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must have 'role' and 'content', got keys {sorted(m)}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this checkpoint's tokenizer has no chat template: pass a string or token ids")
    ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


class TextDecoder:
    """Decodes a growing list of new tokens into text pieces that are final: a piece is handed out only up to
    the last space or newline (or after a CJK character), and never while the text ends in an incomplete
    multi-byte character, so a later token can neither change nor split it (transformers' TextStreamer
    rule). finish() hands out the rest."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""    # everything decoded so far
        self.emitted = 0  # characters of self.text handed out

    def push(self, tokens: Sequence[int]) -> str:
        self.tokens.extend(tokens)
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if self.text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its other bytes
            return ""
        end = len(self.text)
        if not (self.text.endswith("\n") or (self.text and _is_cjk(self.text[-1]))):
            end = self.text.rfind(" ") + 1
        return self._take(end)

    def finish(self) -> str:
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        piece, self.emitted = self.text[self.emitted:end], end
        return piece


class StopStrings:
    """Watches the decoded text for stop strings: hit() is true once any occurs in the new text, and cut()
    is the text before the first occurrence."""

    def __init__(self, stop: str | Sequence[str] | None):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty str, got {s!r}")
        self.stops = stops

    def first(self, text: str) -> int:
        """Index of the first stop string in text, or -1."""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else -1

    def cut(self, text: str) -> str:
        i = self.first(text)
        return text if i < 0 else text[:i]


_DONE = object()


class TextStream:
    """Iterates the text of a generate call as it is produced (Model.stream). Generation runs on a worker
    thread and hands final pieces (TextDecoder) through a queue; text from a stop string on is never handed
    out (the last len(longest stop) - 1 characters wait until the text after them is known). Leaving the
    loop early, or an exception in it, stops generation after the chunk in flight. `result`: the
    GenerateResult, once the stream is exhausted."""

    def __init__(self, model, prompt, kwargs: dict):
        if model.tokenizer is None:
            raise ValueError("streaming text needs the checkpoint's tokenizer: use generate(on_tokens=...)")
        self.result = None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._sent = 0
        self._decoder = TextDecoder(model.tokenizer)
        self._stops = StopStrings(kwargs.get("stop"))
        self._hold = max((len(s) for s in self._stops.stops), default=1) - 1
        user_callback = kwargs.pop("on_tokens", None)

        def on_tokens(chunk):
            asked = bool(user_callback(chunk)) if user_callback is not None else False
            self._decoder.push(chunk)
            final = self._decoder.text[:self._decoder.emitted]
            cut = self._stops.first(final)
            self._send(final[:cut] if cut >= 0 else final[:max(0, len(final) - self._hold)])
            return asked or self._stop.is_set()

        def run():
            try:
                self.result = model.generate(prompt, on_tokens=on_tokens, **kwargs)
                self._send(self.result.text)
                self._queue.put(_DONE)
            except BaseException as e:  # handed to the consumer, which re-raises it
                self._queue.put(e)

        self._thread = threading.Thread(target=run, name="dotf-stream", daemon=True)
        self._thread.start()

    def _send(self, visible: str) -> None:
        if len(visible) > self._sent:
            self._queue.put(visible[self._sent:])
            self._sent = len(visible)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            item = self._queue.get()
        except BaseException:  # e.g. KeyboardInterrupt while waiting: stop the worker too
            self.close()
            raise
        if item is _DONE:
            self._thread.join()
            raise StopIteration
        if isinstance(item, BaseException):
            self._thread.join()
            raise item
        return item

    def close(self) -> None:
        """Stops generation after the chunk in flight and waits for the worker."""
        self._stop.set()
        self._thread.join()

    def __del__(self):
        self._stop.set()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
