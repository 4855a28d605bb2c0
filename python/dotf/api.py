"""The public API: dotf.load(...) -> Model with forward_logits() and generate()."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from . import _C
from .loading import load_checkpoint
from .options import DEFAULT_STRATEGY
from .text import StopStrings, TextDecoder, TextStream, encode_prompt, is_messages

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


def _sampling_seed(seed: Any, generator: Any, options: dict, device: torch.device) -> int:
    """The seed of a call's random stream: `seed`, or one drawn from `generator`, or from torch's default
    generator; 0 (unused) for greedy calls, which refuse both."""
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if not options.get("do_sample", False):
        for name, value in (("seed", seed), ("generator", generator)):
            if value is not None:
                raise ValueError(f"{name} needs do_sample=True (greedy decoding draws no random numbers)")
        return 0
    if seed is not None:
        seed = _as_int(seed, "seed")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")
        return seed
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(f"generator must be on the model's device {device}, got one on {generator.device}")
        return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device).item())
    return int(torch.randint(0, 2**63 - 1, (1,)).item())


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_tokenizer(directory) -> Any:
    """The tokenizer in a checkpoint directory, or False (looked for, none there) so it is looked for once."""
    if directory is None or not any((directory / f).is_file() for f in TOKENIZER_FILES):
        return False
    try:
        from transformers import AutoTokenizer  # noqa: PLC0415
    except ImportError:
        return False
    return AutoTokenizer.from_pretrained(str(directory))


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
        self.generation_config = ckpt.generation_config  # the checkpoint's, read by transformers_generate()
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
                weights: str = "same", logits_top_k: int = 0, kv: str = "same", window: int = 0):
        """Low level: run tokens at positions start.. over `cache` under a layer plan, with the model's
        weights ("same") or its derived int8 draft copy ("int8"), attention over the exact KV rows ("same")
        or the cache's int8 mirror ("int8", CPU: cache.add_int8_mirror() first; new rows go to both).
        logits_top_k > 0: only each row's k largest logits (and those tied with the k-th) are needed; the LM
        head's int8 screen may leave the rest at -inf. window > 0: attention sees the first 4 keys and each
        row's last `window` keys only (the draft_window option's draft passes; CPU).

        Returns (logits [T or 1, vocab], mean similarity [L, 2], last-position similarity [L, 2])."""
        ids = self._input_ids(input_ids)
        full = [True] * self.num_layers
        attention = full if attention is None else self._plan(attention, "attention")
        mlp = full if mlp is None else self._plan(mlp, "mlp")
        return self._impl.forward(ids, _as_int(start, "start"), cache, attention, mlp, bool(similarity), logits,
                                  weights, _as_int(logits_top_k, "logits_top_k"), kv, _as_int(window, "window"))

    def generate(self, prompt: Any, max_new_tokens: int | None = None, strategy: str = DEFAULT_STRATEGY,
                 eos_token_id: Any = None, on_tokens: Callable[[list[int]], Any] | None = None,
                 stop: str | Sequence[str] | None = None, draft_attention: Sequence[bool] | None = None,
                 draft_mlp: Sequence[bool] | None = None, cache=None, seed: int | None = None,
                 generator: torch.Generator | None = None, on_prefill: Callable[[int, int], Any] | None = None,
                 **options: Any) -> GenerateResult:
        """Generate after `prompt`: a string, a list of chat messages ({"role", "content"} dicts: the chat
        template is applied with the generation prompt) or token ids (a list or 1-D tensor). Greedy by default,
        sampled with do_sample=True. Returns the new tokens, the decoded text (with a tokenizer) and statistics.

        strategy: "dotf" (default: the paper's draft-on-the-fly method plus an int8 self-draft, n-gram lookup
        drafts and a break-even fallback), "asd" (the paper: this model minus the attention sublayers whose
        prefill cosine similarity is >= threshold, adaptive draft exit), "ar" (plain decoding). Greedy: every
        strategy returns exactly the full model's greedy tokens. Sampling (do_sample=True, temperature, top_k,
        top_p, min_p with transformers' meanings and defaults): every strategy's output is distributed exactly
        as the model's own sampling; seed (an int >= 0) or generator (a torch.Generator on the model's device)
        makes a call reproducible, else the seed comes from torch's default generator (torch.manual_seed).
        max_new_tokens and every other option (threshold, max_draft, gamma, draft, lookup, cuda_graphs, ...)
        are listed with their defaults per strategy and device by dotf.options().
        eos_token_id: an id or ids that end generation; by default the checkpoint's EOS ids for text and chat
        prompts, none for token ids (fixed-length runs); [] for none. stop: strings that end generation once
        the new text contains one (the text is cut before it; stats["stop_reason"] is "stop").
        on_tokens(list[int]) receives each accepted chunk of tokens as it is produced (see stream() for text);
        it may return True to end generation after that chunk (stats["stop_reason"] is then "stop").
        on_prefill(done, layers) is called during the prompt's pass after each decoder layer (a progress bar for
        long prompts; Ctrl-C is honoured between layers too).
        draft_attention / draft_mlp: a fixed draft layer plan (one bool per layer) instead of selection."""
        text_prompt = isinstance(prompt, str) or is_messages(prompt)
        ids = self._input_ids(encode_prompt(self.tokenizer, prompt) if text_prompt else prompt)
        if eos_token_id is None and text_prompt:
            eos_token_id = self.eos_token_ids
        if max_new_tokens is not None:
            options["max_new_tokens"] = max_new_tokens
        for fn, fn_name in ((on_tokens, "on_tokens"), (on_prefill, "on_prefill")):
            if fn is not None and not callable(fn):
                raise TypeError(f"{fn_name} must be callable, got {type(fn).__name__}")
        stops = StopStrings(stop)
        if stops.stops and self.tokenizer is None:
            raise ValueError("stop strings need the checkpoint's tokenizer (and transformers installed)")
        decoder = TextDecoder(self.tokenizer) if stops.stops else None

        def chunk_callback(chunk: list[int]) -> bool:  # True ends generation after this chunk
            asked = bool(on_tokens(chunk)) if on_tokens is not None else False
            if decoder is None:
                return asked
            decoder.push(chunk)
            return asked or stops.first(decoder.text) >= 0

        plans = [None if p is None else self._plan(p, name)
                 for p, name in ((draft_attention, "draft_attention"), (draft_mlp, "draft_mlp"))]
        # A strategy that is not a str gets the same ValueError as an unknown name, from the name table.
        name = strategy if isinstance(strategy, str) else repr(strategy)
        callback = chunk_callback if (on_tokens is not None or decoder is not None) else None
        tokens, stats = self._impl.generate(ids, name, self._eos(eos_token_id), callback, options, plans[0],
                                            plans[1], cache, _sampling_seed(seed, generator, options, self.device),
                                            on_prefill)
        tokens = list(tokens)
        text = None
        if self.tokenizer is not None:
            text = stops.cut(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return GenerateResult(tokens=tokens, stats=dict(stats), text=text)

    def stream(self, prompt: Any, **kwargs: Any) -> Iterator[str]:
        """generate(prompt, **kwargs) as a stream of text pieces, each final (never a split character or
        word-piece; transformers' TextIteratorStreamer behaviour), for a `for` loop. Generation runs on a
        worker thread; leaving the loop early stops it after the chunk in flight. The stream's `result`
        attribute holds the GenerateResult once the loop has finished."""
        return TextStream(self, prompt, kwargs)

    def transformers_generate(self, input_ids: Any, **kwargs: Any) -> torch.Tensor:
        """transformers' model.generate(...) for one sequence, same arguments and return value ([1, P + new]):
        see dotf.transformers_compat."""
        from .transformers_compat import transformers_generate  # noqa: PLC0415

        return transformers_generate(self, input_ids, **kwargs)

    def _plan(self, plan: Sequence[bool], name: str) -> list[bool]:
        plan = [bool(b) for b in plan]
        if len(plan) != self.num_layers:
            raise ValueError(f"{name} must have one entry per layer ({self.num_layers}), got {len(plan)}")
        return plan

    def kv_cache_bytes(self, positions: int, draft_kv: str = "same") -> int:
        """Bytes of a KV cache of `positions` positions in this model's dtype (K and V of every layer), plus the
        draft's int8 mirror with draft_kv="int8". A generate call allocates prompt + max_new_tokens positions."""
        positions = _as_int(positions, "positions")
        if positions < 0:
            raise ValueError(f"positions must be >= 0, got {positions}")
        if draft_kv not in ("same", "int8"):
            raise ValueError(f"draft_kv must be 'same' or 'int8', got {draft_kv!r}")
        return self._impl.cache_bytes(positions, draft_kv == "int8")

    @property
    def draft_bytes(self) -> int:
        """Memory held by derived draft weights (the int8 copy), 0 until a call needed them."""
        return self._impl.draft_bytes

    @property
    def lm_head_screen_bytes(self) -> int:
        """Memory held by the LM head's int8 screen (option lm_head_screen), 0 until a call needed it: an int8
        copy of the head (vocab x hidden bytes and a float scale per row; the int8 draft's head too, counted in
        draft_bytes as well) and 16 bytes of bound terms per vocabulary entry."""
        return self._impl.lm_head_screen_bytes

    def release_draft(self) -> None:
        """Free the weights derived from the model (the int8 draft, the LM-head screen); the next call that
        needs them rebuilds them."""
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
        """The checkpoint's tokenizer (needs `transformers`); None when the checkpoint ships none."""
        if self._tokenizer is None:
            self._tokenizer = _load_tokenizer(self.source_dir)
        return self._tokenizer or None


def load(src: Any, dtype: torch.dtype = torch.float32, device: Any = "cpu", max_seq_len: int | None = None,
         linear_path: str = "auto") -> Model:
    """Load a Hugging Face causal LM (directory, PreTrainedModel, or built-in name like "smollm2-135m")."""
    return Model(src, dtype=dtype, device=device, max_seq_len=max_seq_len, linear_path=linear_path)
