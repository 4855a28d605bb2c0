"""The public API: dotf.load(...) -> Model with forward_logits() and generate()."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import _C
from .loading import load_checkpoint

STRATEGIES = ("ar", "asd", "dotf")

# Defaults of the speculative options per strategy; README "Choosing the defaults" says how they
# were chosen. "asd" is the paper's method; "dotf" adds what pays on the models users run.
_ASD_DEFAULTS = {
    "threshold": 0.99,     # tau: attention sublayers with prefill similarity >= tau are dropped
    "budget": 0.5,         # rho: at most this fraction of attention sublayers is dropped
    "keep_first": 1,       # never drop the first k layers' attention
    "similarity": "mean",  # aggregate the prefill similarity over positions ("mean") or take the last
    "max_draft": 12,       # K_max
    "gamma": 0.6,          # initial draft-exit threshold on the draft's top-1 probability
    "draft_exit": "probability",  # stop drafting on a low top-1 "probability" (the paper) or logit "margin"
    "margin": 0.1,         # initial draft-exit threshold on the top-1 minus runner-up logit (draft_exit="margin")
    "alpha": 0.9,          # acceptance target of the adaptive gamma rule
    "adaptive_gamma": True,  # False: gamma stays at its initial value (the fixed-gamma ablation)
    "carry_gamma": False,  # start from the gamma the previous call ended with (needs adaptive_gamma)
    "draft": "same",       # draft weights: the model's own ("same") or an int8 copy ("int8", CPU)
    "lookup": False,       # n-gram lookup drafts from prompt + output
    "lookup_every_step": False,  # look up again after every model draft token (not only at round start)
    "lookup_max_tokens": 4,  # tokens proposed per lookup (each lookup is checked in one draft pass of 1 + m rows)
    "lookup_max_ngram": 3,
    "lookup_min_ngram": 2,
    "break_even": False,   # decode plainly while speculation is slower than plain steps
    "reselect_every": 0,   # re-select the plan from verify-pass similarities every N rounds
    "selection": "threshold",  # "threshold" (the paper: s >= tau) or "cost" (dotf's cost model)
    "sensitivity": 10.0,   # cost model: acceptance falls as exp(-sensitivity * sum(1 - s)) of skipped sublayers
    "cost_warmup_rounds": 3,  # cost model: rounds with nothing skipped before the first choice
}
DEFAULTS = {
    "asd": _ASD_DEFAULTS,
    # gamma 0.2 and K_max 8: the int8 draft agrees with the full model on ~98% of tokens, so stopping it
    # at a 0.6 top-1 probability ended most rounds early, while verifying more than ~8 tokens costs more
    # than it wins on a CPU; lookups after every draft token, at most 4 tokens each, were faster on all three
    # tuning tasks (README "Choosing the defaults").
    "dotf": {**_ASD_DEFAULTS, "draft": "int8", "threshold": 1.0, "lookup": True, "lookup_every_step": True,
             "break_even": True, "gamma": 0.2, "max_draft": 8},
}
# On a GPU the int8 draft is not available (its kernels are CPU ones): "dotf" drafts with the model's
# own weights under the paper's attention skipping, plus lookup drafts and the break-even fallback.
_DOTF_CUDA_DEFAULTS = {**DEFAULTS["dotf"], "draft": "same", "threshold": _ASD_DEFAULTS["threshold"]}
_FLOAT_OPTIONS = {"threshold", "budget", "gamma", "margin", "alpha", "sensitivity"}
_INT_OPTIONS = {"keep_first", "max_draft", "lookup_max_ngram", "lookup_min_ngram", "lookup_max_tokens",
                "reselect_every", "cost_warmup_rounds"}
_BOOL_OPTIONS = {"adaptive_gamma", "carry_gamma", "lookup", "lookup_every_step", "break_even"}
_STR_OPTIONS = {"similarity", "draft", "draft_exit", "selection"}


def build_info() -> dict:
    """torch version, whether CUDA kernels were built, their archs, libtorch's threading, and whether
    packed weights ask for transparent huge pages (huge_pages; DOTF_HUGE_PAGES=0 turns it off) under
    the kernel's mode (transparent_huge_pages: "always", "madvise", "never" or "unavailable")."""
    info = dict(_C.build_info())
    info["torch"] = torch.__version__
    return info


@dataclass
class GenerateResult:
    tokens: list[int]
    stats: dict = field(default_factory=dict)
    text: str | None = None


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _resolve_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a valid torch device: {e}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {dev.type!r}")
    if dev.type == "cuda":
        if not _C.build_info()["cuda"]:
            raise ValueError("device='cuda' needs dotf built with CUDA kernels (this build is CPU-only; "
                             "rebuild on a CUDA machine with DOTF_CUDA=ON)")
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' requested but torch sees no CUDA device")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _check_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    allowed = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32, got {type(dtype).__name__}")
    if dtype not in allowed:
        raise ValueError(f"dtype {dtype} is not supported (float32, bfloat16, float16; float64 on CPU)")
    if dtype == torch.float64 and device.type != "cpu":
        raise ValueError("dtype torch.float64 is supported on CPU only")
    return dtype


class Model:
    """A loaded causal LM. Thread-safe: every generate call owns its KV cache."""

    def __init__(self, src: Any, dtype: torch.dtype = torch.float32, device: Any = "cpu",
                 max_seq_len: int | None = None, linear_path: str = "auto"):
        self.device = _resolve_device(device)
        self.dtype = _check_dtype(dtype, self.device)
        if max_seq_len is not None:
            max_seq_len = _as_int(max_seq_len, "max_seq_len")
            if max_seq_len < 1:
                raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        ckpt = load_checkpoint(src, max_seq_len)
        limit = ckpt.config.max_position_embeddings
        if max_seq_len is not None and max_seq_len > limit:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the model's max_position_embeddings={limit}")
        self.config = ckpt.config
        self.raw_config = ckpt.raw_config
        self.source_dir = ckpt.source_dir
        self.eos_token_ids = ckpt.eos_token_ids
        self.vocab_size = ckpt.config.vocab_size
        self.num_layers = ckpt.config.num_layers
        self._impl = _C.Model(ckpt.config, ckpt.tensors, self.dtype, self.device, max_seq_len or limit, linear_path)
        self.max_seq_len = self._impl.max_seq_len
        self._tokenizer = None

    # ---- inputs ------------------------------------------------------------------------------
    def _input_ids(self, input_ids: Any) -> torch.Tensor:
        if isinstance(input_ids, torch.Tensor):
            if input_ids.dim() != 1:
                raise ValueError(f"input_ids must be 1-D, got shape {tuple(input_ids.shape)}")
            if input_ids.dtype.is_floating_point or input_ids.dtype in (torch.bool, torch.complex64, torch.complex128):
                raise TypeError(f"input_ids must hold integers, got dtype {input_ids.dtype}")
            ids = input_ids.to("cpu", torch.long).contiguous()
        elif isinstance(input_ids, (list, tuple)):
            for i, t in enumerate(input_ids):
                if isinstance(t, bool) or not isinstance(t, numbers.Integral):
                    raise TypeError(f"input_ids[{i}] must be an int, got {type(t).__name__}")
            ids = torch.tensor([int(t) for t in input_ids], dtype=torch.long)
        else:
            raise TypeError(f"input_ids must be a list of ints or a 1-D integer tensor, got {type(input_ids).__name__}")
        if ids.numel() == 0:
            raise ValueError("input_ids must not be empty")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"input_ids holds token id {bad}, outside the vocabulary [0, {self.vocab_size})")
        return ids

    def _eos(self, eos_token_id: Any) -> list[int]:
        if eos_token_id is None:
            return []
        ids = list(eos_token_id) if isinstance(eos_token_id, (list, tuple, set)) else [eos_token_id]
        out = [_as_int(i, "eos_token_id") for i in ids]
        for i in out:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"eos_token_id {i} is outside the vocabulary [0, {self.vocab_size})")
        return out

    # ---- compute -----------------------------------------------------------------------------
    def forward_logits(self, input_ids: Any) -> torch.Tensor:
        """Full-model logits [T, vocab] for a prompt (a fresh cache; no state kept)."""
        ids = self._input_ids(input_ids)
        if ids.numel() > self.max_seq_len:
            raise ValueError(f"input_ids has {ids.numel()} tokens, more than max_seq_len={self.max_seq_len}")
        cache = self._impl.new_cache(ids.numel())
        full = [True] * self.num_layers
        logits, _, _ = self._impl.forward(ids, 0, cache, full, full, False, "all")
        return logits

    def new_cache(self, capacity: int):
        """An empty KV cache for the low-level forward()/generate(cache=...)."""
        return self._impl.new_cache(_as_int(capacity, "capacity"))

    def forward(self, input_ids: Any, start: int, cache, attention: Sequence[bool] | None = None,
                mlp: Sequence[bool] | None = None, similarity: bool = False, logits: str = "all",
                weights: str = "same"):
        """Low level: run tokens at positions start.. over `cache` under a layer plan, with the model's
        weights ("same") or its derived int8 draft copy ("int8").

        Returns (logits [T or 1, vocab], mean similarity [L, 2], last-position similarity [L, 2])."""
        ids = self._input_ids(input_ids)
        full = [True] * self.num_layers
        attention = full if attention is None else self._plan(attention, "attention")
        mlp = full if mlp is None else self._plan(mlp, "mlp")
        return self._impl.forward(ids, _as_int(start, "start"), cache, attention, mlp, bool(similarity), logits,
                                  weights)

    def generate(self, input_ids: Any, max_new_tokens: int = 64, strategy: str = "ar", eos_token_id: Any = None,
                 threshold: float | None = None, max_draft: int | None = None, gamma: float | None = None,
                 alpha: float | None = None, on_tokens: Callable[[list[int]], Any] | None = None,
                 draft_attention: Sequence[bool] | None = None, draft_mlp: Sequence[bool] | None = None,
                 cache=None, **more_options: Any) -> GenerateResult:
        """Greedy generation; every strategy returns exactly the full model's greedy tokens.

        strategy: "ar" (plain), "asd" (the paper: draft = this model minus the attention sublayers whose
        prefill cosine similarity is >= threshold, adaptive draft exit), "dotf" (asd plus an int8 self-draft,
        n-gram lookup drafts and a break-even fallback). Options not given take DEFAULTS[strategy];
        more_options: budget, keep_first, similarity ("mean"|"last"), adaptive_gamma (False keeps gamma fixed),
        carry_gamma, draft ("same"|"int8"), lookup, lookup_max_ngram, lookup_min_ngram, break_even, reselect_every,
        selection ("threshold"|"cost"), sensitivity, cost_warmup_rounds (the cost model, see README),
        cuda_graphs (default True: on a CUDA model, steps replay captured CUDA graphs; any strategy).
        On CUDA, "dotf" drafts with the model's own weights (draft="same", threshold 0.99): int8 is CPU-only.
        draft_attention / draft_mlp: a fixed draft layer plan (one bool per layer) instead of selection.
        on_tokens(list[int]) receives each accepted chunk as it is produced."""
        ids = self._input_ids(input_ids)
        max_new_tokens = _as_int(max_new_tokens, "max_new_tokens")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not isinstance(strategy, str) or strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
        if ids.numel() + max_new_tokens > self.max_seq_len:
            raise ValueError(f"prompt ({ids.numel()} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"max_seq_len={self.max_seq_len}")
        if on_tokens is not None and not callable(on_tokens):
            raise TypeError(f"on_tokens must be callable, got {type(on_tokens).__name__}")
        cuda_graphs = more_options.pop("cuda_graphs", True)
        if not isinstance(cuda_graphs, bool):
            raise TypeError(f"cuda_graphs must be a bool, got {type(cuda_graphs).__name__}")
        given = dict(threshold=threshold, max_draft=max_draft, gamma=gamma, alpha=alpha, **more_options)
        options = self._options(strategy, {k: v for k, v in given.items() if v is not None}, self.device)
        options["cuda_graphs"] = cuda_graphs
        plans = [None if p is None else self._plan(p, name)
                 for p, name in ((draft_attention, "draft_attention"), (draft_mlp, "draft_mlp"))]
        tokens, stats = self._impl.generate(ids, strategy, max_new_tokens, self._eos(eos_token_id), on_tokens,
                                            options, plans[0], plans[1], cache)
        return GenerateResult(tokens=list(tokens), stats=dict(stats))

    @staticmethod
    def _options(strategy: str, given: dict, device: torch.device) -> dict:
        if strategy == "ar":  # "ar" ignores the speculative options, but not a misspelt or mistyped one
            Model._options("asd", given, device)
            return {}
        defaults = _DOTF_CUDA_DEFAULTS if strategy == "dotf" and device.type == "cuda" else DEFAULTS[strategy]
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise TypeError(f"generate() got unknown option(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
        options = {**defaults, **given}
        for k in _FLOAT_OPTIONS:
            options[k] = _as_float(options[k], k)
        for k in _INT_OPTIONS:
            options[k] = _as_int(options[k], k)
        for k in _BOOL_OPTIONS:
            if not isinstance(options[k], bool):
                raise TypeError(f"{k} must be a bool, got {type(options[k]).__name__}")
        for k in _STR_OPTIONS:
            if not isinstance(options[k], str):
                raise TypeError(f"{k} must be a str, got {type(options[k]).__name__}")
        return options

    def _plan(self, plan: Sequence[bool], name: str) -> list[bool]:
        plan = [bool(b) for b in plan]
        if len(plan) != self.num_layers:
            raise ValueError(f"{name} must have one entry per layer ({self.num_layers}), got {len(plan)}")
        return plan

    @property
    def draft_bytes(self) -> int:
        """Memory held by derived draft weights (the int8 copy), 0 until a call needed them."""
        return self._impl.draft_bytes

    def release_draft(self) -> None:
        """Free derived draft weights; the next call that needs them rebuilds them."""
        self._impl.release_draft()

    def graph_stats(self) -> dict:
        """CUDA graph totals over this model's generate calls: captures, replays, eager forwards,
        capture_seconds, and disabled_reason (empty while graphs work; all zero on CPU)."""
        return dict(self._impl.graph_stats())

    def release_graphs(self) -> None:
        """Free the captured CUDA graphs and the KV cache they write; the next call re-captures."""
        self._impl.release_graphs()

    # ---- text helpers ------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The checkpoint's tokenizer (needs `transformers`); None when the checkpoint has none."""
        if self._tokenizer is None and self.source_dir is not None:
            try:
                from transformers import AutoTokenizer  # noqa: PLC0415
            except ImportError:
                return None
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.source_dir))
        return self._tokenizer


def load(src: Any, dtype: torch.dtype = torch.float32, device: Any = "cpu", max_seq_len: int | None = None,
         linear_path: str = "auto") -> Model:
    """Load a Hugging Face causal LM (directory, PreTrainedModel, or built-in name like "smollm2-135m")."""
    return Model(src, dtype=dtype, device=device, max_seq_len=max_seq_len, linear_path=linear_path)
