"""llama.cpp (through llama-cpp-python) as a benchmark peer of dotf on the same weights.

bash bench/setup_llama_cpp.sh installs it (compiled from its PyPI source package with the machine's
instruction sets) and unpacks the source package, whose convert_hf_to_gguf.py turns the Hugging Face
checkpoint dotf loads into a GGUF at the run's precision (F32 for float32 runs, BF16 for bfloat16
runs). The GGUF is cached next to the checkpoint folder and rebuilt when the checkpoint is newer.

Two methods, both greedy on the caller's token ids, with exactly new_tokens new tokens (no EOS stop,
like the other methods of bench/decode.py) and a fresh KV cache per call, so every call pays its own
prefill:
    llama_cpp         Llama.generate(ids, temp=0.0)
    llama_cpp_lookup  the same with llama-cpp-python's prompt-lookup drafter
                      (LlamaPromptLookupDecoding(num_pred_tokens=10)); llama-cpp-python keeps the
                      logits of every evaluated position when a drafter is set, its prefill included.

    python bench/llama_cpp_peer.py --model smollm2-135m   # convert, then a one-prompt smoke run
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

VERSION = "0.3.36"
SETUP = "bash bench/setup_llama_cpp.sh"
METHODS = ("llama_cpp", "llama_cpp_lookup")
OUTTYPES = {"float32": "f32", "bfloat16": "bf16"}  # decode.py's --dtype -> the converter's --outtype
LOOKUP_TOKENS = 10


def source_dir() -> Path:
    """The unpacked llama-cpp-python source package (setup_llama_cpp.sh puts it there)."""
    root = Path(os.environ.get("DOTF_LLAMA_CPP_SRC", Path.home() / ".cache" / "dotf" / "llama-cpp-python-src"))
    return root.expanduser() / f"llama_cpp_python-{VERSION}"


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit(f"llama-cpp-python is not installed ({e}): run `{SETUP}` (compiles llama.cpp, ~4 min "
                         f"on 2 cores)") from None
    if llama_cpp.__version__ != VERSION:
        print(f"[llama_cpp] warning: llama-cpp-python {llama_cpp.__version__} is installed, the benchmark "
              f"pins {VERSION} (`{SETUP}`)", file=sys.stderr)
    return llama_cpp


def build_flags() -> str | None:
    """The CMAKE_ARGS setup_llama_cpp.sh compiled the installed llama.cpp with."""
    stamp = Path(sys.prefix) / "share" / "dotf" / "llama_cpp_build_flags"
    return stamp.read_text().strip() if stamp.is_file() else None


def gguf_path(hf_dir: Path, dtype: str) -> Path:
    hf_dir = Path(hf_dir).resolve()
    return hf_dir.parent / f"{hf_dir.name}.llama_cpp-{OUTTYPES[dtype]}.gguf"


def convert(hf_dir: Path, dtype: str) -> Path:
    """GGUF of the checkpoint in hf_dir at dtype's precision, converted once and cached next to it."""
    hf_dir = Path(hf_dir).resolve()
    out = gguf_path(hf_dir, dtype)
    weights = max((p.stat().st_mtime for p in hf_dir.glob("*.safetensors")), default=0.0)
    if out.is_file() and out.stat().st_mtime >= weights:
        return out
    llama_src = source_dir() / "vendor" / "llama.cpp"
    script = llama_src / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise SystemExit(f"{script} is missing: run `{SETUP}` (it unpacks llama-cpp-python's source package)")
    tmp = out.with_name(out.name + ".tmp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(llama_src / "gguf-py"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"[llama_cpp] converting {hf_dir} to {OUTTYPES[dtype]} GGUF: {out}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, str(script), str(hf_dir), "--outtype", OUTTYPES[dtype],
                           "--outfile", str(tmp)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"convert_hf_to_gguf.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    os.replace(tmp, out)
    return out


class LlamaCppPeer:
    """One llama.cpp model on a fixed thread count, the plain and the prompt-lookup method on it."""

    def __init__(self, hf_dir: Path, dtype: str, threads: int, n_ctx: int = 2048, n_batch: int = 512):
        if dtype not in OUTTYPES:
            raise ValueError(f"llama.cpp peer: no GGUF type for dtype {dtype!r}; choose from {', '.join(OUTTYPES)}")
        self.llama_cpp = import_llama_cpp()
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
        self.path = convert(hf_dir, dtype)
        kw = dict(n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=n_batch, verbose=False)
        self.lookup_drafter = _RecordingDrafter(LlamaPromptLookupDecoding(num_pred_tokens=LOOKUP_TOKENS))
        self.models = {"llama_cpp": self.llama_cpp.Llama(str(self.path), **kw),
                       "llama_cpp_lookup": self.llama_cpp.Llama(str(self.path), draft_model=self.lookup_drafter, **kw)}
        self.settings = {"threads": threads, "n_ctx": n_ctx, "n_batch": n_batch,
                         "lookup": f"LlamaPromptLookupDecoding(num_pred_tokens={LOOKUP_TOKENS})"}

    def info(self) -> dict:
        """What the benchmark's metadata records about this peer."""
        return {"version": self.llama_cpp.__version__, "gguf": str(self.path), "gguf_type": self.path.stem.rsplit("-", 1)[1],
                "system_info": self.llama_cpp.llama_print_system_info().decode().strip(),
                "build_flags": build_flags(), **self.settings}

    def generate(self, method: str, ids: list[int], new_tokens: int) -> dict:
        """Greedy tokens of one call with its timings: seconds (the whole call), prefill_seconds (until the
        first new token, which the prompt's logits decide), and for the lookup method its drafts."""
        llm = self.models[method]
        self.lookup_drafter.calls.clear()
        tokens = []
        t0 = time.perf_counter()
        llm.reset()  # forget the previous call's cache: generate() would otherwise reuse a common prefix
        gen = llm.generate(ids, temp=0.0)
        for token in gen:
            if not tokens:
                prefill = time.perf_counter() - t0
            tokens.append(int(token))
            if len(tokens) == new_tokens:
                break
        gen.close()
        seconds = time.perf_counter() - t0
        stats = {"seconds": seconds, "prefill_seconds": prefill}
        if method == "llama_cpp_lookup":
            stats.update(self.lookup_drafter.acceptance(len(ids), tokens))
        return {"tokens": tokens, "seconds": seconds, "stats": stats}


class _RecordingDrafter:
    """Wraps a llama-cpp-python drafter and keeps each proposal with the context length it continues, so
    that its acceptance can be read off the generated tokens afterwards (llama-cpp-python verifies every
    proposal it asks for)."""

    def __init__(self, drafter):
        self.drafter, self.calls = drafter, []

    def __call__(self, input_ids, /, **kwargs):
        proposal = self.drafter(input_ids, **kwargs)
        self.calls.append((len(input_ids), [int(t) for t in proposal]))
        return proposal

    def acceptance(self, prompt_len: int, tokens: list[int]) -> dict:
        drafted = accepted = 0
        for context, proposal in self.calls:
            following = tokens[context - prompt_len:]
            n = 0
            while n < min(len(proposal), len(following)) and proposal[n] == following[n]:
                n += 1
            drafted, accepted = drafted + len(proposal), accepted + n
        return {"lookup_rounds": len(self.calls), "lookup_drafted": drafted, "lookup_accepted": accepted}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="float32", choices=list(OUTTYPES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=32)
    args = p.parse_args(argv)
    from dotf import checkpoints
    from transformers import AutoTokenizer
    hf_dir = checkpoints.prepare(args.model) if checkpoints.is_builtin(args.model) else Path(args.model)
    peer = LlamaCppPeer(hf_dir, args.dtype, args.threads)
    print(peer.info())
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    ids = tok.apply_chat_template([{"role": "user", "content": "Write a Python function that reverses a list."}],
                                  add_generation_prompt=True, tokenize=True, return_dict=False)
    for method in METHODS:
        r = peer.generate(method, ids, args.new_tokens)
        print(method, f"{len(r['tokens']) / r['seconds']:.1f} tok/s", r["stats"], repr(tok.decode(r["tokens"])))


if __name__ == "__main__":
    main()
