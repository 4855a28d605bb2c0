"""Hugging Face checkpoints -> (ModelConfig, name -> tensor map) for the C++ core.

Accepts a checkpoint directory (config.json + model.safetensors, or sharded *.safetensors with an
index), a transformers PreTrainedModel, or a built-in model name. Every refusal is a Python
exception that names the file, tensor or config field at fault.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import _C

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
}
SUPPORTED_MODEL_TYPES = set(SUPPORTED_ARCHITECTURES.values())
_PROGRESS_BYTES = 1 << 30  # show a progress bar for checkpoints larger than this


@dataclass
class LoadedCheckpoint:
    config: Any  # _C.ModelConfig
    tensors: dict[str, torch.Tensor]
    raw_config: dict
    source_dir: Path | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    generation_config: dict = field(default_factory=dict)  # generation_config.json, or the model's own


def _field(cfg: dict, name: str, where: str, default: Any = None, required: bool = True) -> Any:
    if name in cfg and cfg[name] is not None:
        return cfg[name]
    if required and default is None:
        raise ValueError(f"{where}: required field '{name}' is missing")
    return default


def _int(value: Any, name: str, where: str) -> int:
    """An integral config value (JSON 64 or 64.0), or a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    return int(value)


def _float(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)


def _int_field(cfg: dict, name: str, where: str) -> int:
    return _int(_field(cfg, name, where), name, where)


def _rope_settings(cfg: dict, where: str) -> tuple[float, dict | None]:
    """rope_theta and the scaling dict, from transformers 4.x (rope_theta/rope_scaling) or 5.x (rope_parameters)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or None
    for name, value in (("rope_parameters", params), ("rope_scaling", scaling)):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}: {name} must be a JSON object, got {value!r}")
    theta = _float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)), "rope_theta", where)
    if params and params.get("rope_type", "default") != "default":
        scaling = params
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            scaling = None
        elif kind != "llama3":
            raise ValueError(f"{where}: rope_scaling type '{kind}' is not supported (supported: none, llama3)")
    factor = (params or {}).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if factor != 1.0:
        raise ValueError(f"{where}: partial_rotary_factor={factor} is not supported (only 1.0)")
    return float(theta), scaling


def parse_config(cfg: dict, max_seq_len: int | None, where: str = "config.json") -> Any:
    """config.json dict -> _C.ModelConfig, refusing unsupported features by field name."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    model_type = _field(cfg, "model_type", where)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{where}: model_type '{model_type}' is not supported "
                         f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})")
    archs = cfg.get("architectures") or []
    for arch in [archs] if isinstance(archs, str) else archs:
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"{where}: architecture '{arch}' is not supported "
                             f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{where}: hidden_act '{act}' is not supported (only silu)")
    quant = cfg.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else quant
        raise ValueError(f"{where}: quantization_config ({method}) is not supported: dotf needs a checkpoint "
                         f"with floating-point weights")

    c = _C.ModelConfig()
    c.model_type = model_type
    c.vocab_size = _int_field(cfg, "vocab_size", where)
    c.hidden_size = _int_field(cfg, "hidden_size", where)
    c.intermediate_size = _int_field(cfg, "intermediate_size", where)
    c.num_layers = _int_field(cfg, "num_hidden_layers", where)
    c.num_heads = _int_field(cfg, "num_attention_heads", where)
    c.num_kv_heads = _int(cfg.get("num_key_value_heads") or c.num_heads, "num_key_value_heads", where)
    c.head_dim = _int(cfg.get("head_dim") or c.hidden_size // max(c.num_heads, 1), "head_dim", where)
    c.max_position_embeddings = _int_field(cfg, "max_position_embeddings", where)
    c.rms_norm_eps = _float(cfg.get("rms_norm_eps", 1e-6), "rms_norm_eps", where)
    c.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", False))
    theta, scaling = _rope_settings(cfg, where)
    c.rope_theta = theta
    if scaling is not None:
        rs = _C.RopeScaling()
        rs.type = "llama3"
        w = f"{where} rope_scaling"
        rs.factor = _float(_field(scaling, "factor", w), "factor", w)
        rs.low_freq_factor = _float(_field(scaling, "low_freq_factor", w), "low_freq_factor", w)
        rs.high_freq_factor = _float(_field(scaling, "high_freq_factor", w), "high_freq_factor", w)
        rs.original_max_position_embeddings = _int_field(scaling, "original_max_position_embeddings", w)
        c.rope_scaling = rs

    window = cfg.get("sliding_window")
    window_on = window is not None and (model_type == "mistral" or cfg.get("use_sliding_window", False))
    limit = max_seq_len or c.max_position_embeddings
    if window_on and limit > _int(window, "sliding_window", where):
        raise ValueError(f"{where}: sliding_window={window} would matter at max_seq_len={limit}; dotf has no "
                         f"sliding-window attention: pass max_seq_len <= {window}")
    try:
        c.validate()
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return c


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: missing 'weight_map'")
        files = sorted({directory / name for name in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{f} (listed in {index.name}) not found")
        return files
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(directory.glob("*.safetensors"))
    if not found:
        raise FileNotFoundError(f"no model.safetensors (or sharded *.safetensors with an index) in {directory}")
    return found


def read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """Tensors of all shards, memory-mapped (no copy until the C++ side converts dtype/device)."""
    from safetensors import safe_open  # noqa: PLC0415

    total = sum(f.stat().st_size for f in files)
    bar = None
    if total > _PROGRESS_BYTES:
        from tqdm import tqdm  # noqa: PLC0415
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="loading weights")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    tensors[name] = handle.get_tensor(name)
        except OSError:  # permissions, I/O errors: keep their type; they name the file
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt/truncated files
            raise ValueError(f"{f}: cannot read safetensors file ({type(e).__name__}: {e})") from None
        if bar is not None:
            bar.update(f.stat().st_size)
    if bar is not None:
        bar.close()
    return tensors


def _eos_ids(raw: dict, directory: Path | None) -> list[int]:
    ids = raw.get("eos_token_id")
    if directory is not None and (directory / "generation_config.json").is_file():
        gen = _read_json(directory / "generation_config.json")
        ids = gen.get("eos_token_id", ids)
    if ids is None:
        return []
    return [_int(i, "eos_token_id", "config") for i in (ids if isinstance(ids, list) else [ids])]


def _check_bias_fields(raw: dict, tensors: dict, where: str) -> None:
    """transformers' Llama 'attention_bias'/'mlp_bias' promise bias tensors; a missing one is an error."""
    probes = []
    if raw.get("attention_bias"):
        probes += ["self_attn.q_proj.bias", "self_attn.o_proj.bias"]
    if raw.get("mlp_bias"):
        probes += ["mlp.gate_proj.bias", "mlp.down_proj.bias"]
    for i in range(int(raw.get("num_hidden_layers", 0))):
        for p in probes:
            name = f"model.layers.{i}.{p}"
            if name not in tensors:
                raise ValueError(f"{where}: missing tensor '{name}' (config promises biases)")


def from_directory(path: str | os.PathLike, max_seq_len: int | None) -> LoadedCheckpoint:
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory (expected a Hugging Face checkpoint folder)")
    raw = _read_json(directory / "config.json")
    config = parse_config(raw, max_seq_len, where=str(directory / "config.json"))
    tensors = read_safetensors(_safetensors_files(directory))
    _check_bias_fields(raw, tensors, str(directory))
    gen_path = directory / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.is_file() else {}
    return LoadedCheckpoint(config, tensors, raw, directory, _eos_ids(raw, directory), gen)


def from_pretrained_model(model: Any, max_seq_len: int | None) -> LoadedCheckpoint:
    name = type(model).__name__
    if name not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"model class {name} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    raw = model.config.to_dict()
    config = parse_config(raw, max_seq_len, where=f"{name}.config")
    tensors = dict(model.state_dict())
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}.state_dict()['{key}'] is a {type(t).__name__}, not a tensor")
        if t.is_meta:
            raise ValueError(f"{name}: tensor '{key}' is on the meta device (no data): load the model's weights "
                             f"first, e.g. from_pretrained(...) without device_map='meta'/init_empty_weights")
    _check_bias_fields(raw, tensors, name)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    raw = {**raw, "eos_token_id": eos if eos is not None else raw.get("eos_token_id")}
    path = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    source = Path(path) if path and Path(path).is_dir() else None
    gen = getattr(model, "generation_config", None)
    return LoadedCheckpoint(config, tensors, raw, source, _eos_ids(raw, None), gen.to_dict() if gen is not None else {})


def load_checkpoint(src: Any, max_seq_len: int | None) -> LoadedCheckpoint:
    """Dispatch on the kind of `src`: directory path, PreTrainedModel, or built-in model name."""
    if isinstance(src, (str, os.PathLike)):
        from . import checkpoints  # noqa: PLC0415

        if isinstance(src, str) and checkpoints.is_builtin(src) and not Path(src).exists():
            return from_directory(checkpoints.prepare(src), max_seq_len)
        return from_directory(src, max_seq_len)
    if hasattr(src, "state_dict") and hasattr(src, "config"):
        return from_pretrained_model(src, max_seq_len)
    raise TypeError(f"src must be a checkpoint directory, a built-in model name or a transformers "
                    f"PreTrainedModel, got {type(src).__name__}")
