"""A drop-in for transformers' model.generate(...): the same argument names and return value, run by dotf.

    model = AutoModelForCausalLM.from_pretrained(path)        # an existing transformers script
    fast = dotf.load(model)                                    # once, after loading
    out = fast.transformers_generate(input_ids, max_new_tokens=128, do_sample=True, temperature=0.7,
                                     streamer=TextStreamer(tokenizer))   # instead of model.generate(...)

Defaults come from the checkpoint's generation_config, as transformers takes them; an argument dotf does
not support (beam search, repetition penalty, ...) is an error that names it, never silently ignored.
"""
from __future__ import annotations

from typing import Any

import torch

# generation_config fields dotf implements, and those that do not change what is generated.
SUPPORTED = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p", "min_p", "eos_token_id",
             "stop_strings")
IGNORED = ("pad_token_id", "bos_token_id", "use_cache", "return_dict_in_generate", "output_attentions",
           "output_hidden_states", "output_scores", "output_logits", "transformers_version", "_from_model_config",
           "cache_implementation", "cache_config", "max_cache_len", "compile_config", "disable_compile")


def _unsupported(settings: dict) -> list[str]:
    """Fields set away from transformers' own default that dotf does not implement."""
    from transformers import GenerationConfig  # noqa: PLC0415

    default = GenerationConfig().to_dict()
    return sorted(k for k, v in settings.items() if k not in SUPPORTED and k not in IGNORED and v != default.get(k))


def _settings(model, generation_config: Any, kwargs: dict) -> dict:
    """The checkpoint's generation_config, then the caller's generation_config, then keyword arguments."""
    merged = dict(model.generation_config)
    if generation_config is not None:
        merged.update(generation_config.to_dict() if hasattr(generation_config, "to_dict") else dict(generation_config))
    merged.update(kwargs)
    return merged


def transformers_generate(model, input_ids: Any, attention_mask: Any = None, generation_config: Any = None,
                          streamer: Any = None, strategy: str | None = None, tokenizer: Any = None,
                          **kwargs: Any) -> torch.Tensor:
    """Like transformers' generate for one sequence: input_ids [1, P] (or [P]) -> [1, P + new] on its device."""
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2:
        if ids.size(0) != 1:
            raise ValueError(f"dotf generates one sequence at a time: input_ids has batch size {ids.size(0)}")
        ids = ids[0]
    if attention_mask is not None and not bool(torch.as_tensor(attention_mask).bool().all()):
        raise ValueError("attention_mask with padding is not supported: pass one unpadded sequence")
    settings = _settings(model, generation_config, kwargs)
    unsupported = _unsupported(settings)
    if unsupported:
        raise ValueError(f"dotf does not support {', '.join(f'{k}={settings[k]!r}' for k in unsupported)}; "
                         f"supported: {', '.join(SUPPORTED)} (and dotf's own options, see dotf.options())")
    options = {k: settings[k] for k in ("do_sample", "temperature", "top_k", "top_p", "min_p")
               if settings.get(k) is not None}
    if not options.get("do_sample", False):  # transformers ignores sampling fields of greedy calls
        options = {}
    max_new = settings.get("max_new_tokens")
    if max_new is None:  # transformers' default: max_length 20, prompt included
        max_new = int(settings.get("max_length") or 20) - ids.numel()
        if max_new < 1:
            raise ValueError(f"max_length={settings.get('max_length') or 20} leaves no room after the "
                             f"{ids.numel()}-token prompt: pass max_new_tokens")
    eos = settings.get("eos_token_id")
    stops = settings.get("stop_strings")  # decoded with the checkpoint's tokenizer (`tokenizer` is accepted
    # for transformers' signature: it asks for one with stop_strings)
    if streamer is not None:
        streamer.put(ids.unsqueeze(0).cpu())
    on_tokens = (lambda chunk: streamer.put(torch.tensor(chunk))) if streamer is not None else None
    res = model.generate(ids, max_new_tokens=max_new, eos_token_id=eos if eos is not None else [],
                         on_tokens=on_tokens, stop=stops, **({"strategy": strategy} if strategy else {}), **options)
    if streamer is not None:
        streamer.end()
    new = torch.tensor(res.tokens, dtype=ids.dtype)
    return torch.cat([ids.cpu(), new]).unsqueeze(0).to(torch.as_tensor(input_ids).device)
