"""The generate options, read from their one definition in C++ (csrc/speculative/options.cpp).

    >>> dotf.options()["gamma"].default("dotf")
    0.2
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from . import _C

STRATEGIES: tuple[str, ...] = tuple(_C.strategies)
DEFAULT_STRATEGY: str = _C.default_strategy


@dataclass(frozen=True)
class Option:
    name: str
    type: str                # "bool", "int", "float" or "str"
    choices: tuple[str, ...]  # the accepted names of a str option
    range: str               # e.g. "[-1, 1]", ">= 1"; empty for bools and choices
    scope: str               # "any"; "speculative": read by asd and dotf only ("ar" checks it, then ignores it);
                             # "sampling": read by sampling calls only (an error with do_sample=False)
    doc: str
    defaults: dict           # {"cpu": {strategy: value}, "cuda": {strategy: value}}

    def default(self, strategy: str = DEFAULT_STRATEGY, device: str = "cpu") -> Any:
        """The value a call with `strategy` on `device` ("cpu" or "cuda") uses when the caller gives none."""
        return self.defaults[device][strategy]


@functools.lru_cache(maxsize=None)
def _table() -> tuple[Option, ...]:
    return tuple(Option(o["name"], o["type"], tuple(o["choices"]), o["range"], o["scope"], o["doc"],
                        o["defaults"]) for o in _C.option_table())


def options() -> dict[str, Option]:
    """Every generate option by name, in documentation order."""
    return {o.name: o for o in _table()}


def defaults(strategy: str = DEFAULT_STRATEGY, device: str = "cpu") -> dict[str, Any]:
    """Every option's default for `strategy` on `device` ("cpu" or "cuda")."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return {o.name: o.default(strategy, device) for o in _table()}


def markdown_table() -> str:
    """The README's option table: name, type and range, defaults per strategy (CPU; CUDA where it differs), doc."""
    def show(value: Any) -> str:
        return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"

    rows = ["| option | type | " + " | ".join(f"`{s}`" for s in STRATEGIES) + " | meaning |",
            "|---|---|" + "---|" * len(STRATEGIES) + "---|"]
    for o in _table():
        kind = o.type + (f" {o.range}" if o.range else "") + (f": {', '.join(o.choices)}" if o.choices else "")
        cells = []
        for s in STRATEGIES:
            cpu, cuda = o.default(s, "cpu"), o.default(s, "cuda")
            cell = "–" if s == "ar" and o.scope == "speculative" else show(cpu)
            if cuda != cpu and cell != "–":
                cell += f" (CUDA: {show(cuda)})"
            cells.append(cell)
        rows.append(f"| `{o.name}` | {kind} | " + " | ".join(cells) + f" | {o.doc} |")
    return "\n".join(rows)
