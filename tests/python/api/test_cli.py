"""The command line (python -m dotf): generate from --prompt, a file and stdin; bench; options; and the
README's option table, which must be the one the option definitions print."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import smollm2_path

ROOT = Path(__file__).resolve().parents[3]


def dotf_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    smollm2_path()  # prepared once, offline
    return subprocess.run([sys.executable, "-m", "dotf", *args], input=stdin, capture_output=True, text=True,
                          timeout=600, check=False)


def test_readme_option_table_is_the_definitions_table():
    table = dotf_cli("options", "--markdown")
    assert table.returncode == 0, table.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table.stdout.strip() in readme, ("README.md's option table differs from the definitions "
                                            "(csrc/speculative/options.cpp): paste `python -m dotf options --markdown`")


def test_generate_reads_the_prompt_from_the_flag_a_file_and_stdin(tmp_path):
    args = ["generate", "--max-new-tokens", "8", "--no-stream"]
    by_flag = dotf_cli(*args, "--prompt", "Name a color.")
    assert by_flag.returncode == 0, by_flag.stderr
    assert re.search(r"\[dotf\] 8 tokens in .* tok/s", by_flag.stderr)
    f = tmp_path / "prompt.txt"
    f.write_text("Name a color.", encoding="utf-8")
    by_file = dotf_cli(*args, "--file", str(f))
    by_stdin = dotf_cli(*args, stdin="Name a color.")
    assert by_flag.stdout == by_file.stdout == by_stdin.stdout and by_flag.stdout.strip()
    bad = dotf_cli("generate", "--prompt", "x", "--option", "gamma=2")
    assert bad.returncode != 0 and "gamma must be in (0, 1), got 2" in bad.stderr


@pytest.mark.slow
def test_bench_prints_a_table_with_the_machine():
    out = dotf_cli("bench", "--max-new-tokens", "8", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    assert "thread(s)" in out.stdout and "| prompt | strategy | tok/s | vs ar |" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "tok/s" not in line]
    assert len(rows) == 6 and all(line.endswith("| yes |") for line in rows)  # greedy: dotf's tokens are ar's


def test_generate_shows_prefill_progress_for_long_prompts(tmp_path):
    from dotf.__main__ import PROGRESS_PROMPT_TOKENS
    long = tmp_path / "long.txt"
    long.write_text("the cat sat on the mat. " * (PROGRESS_PROMPT_TOKENS // 6 + 10), encoding="utf-8")
    res = dotf_cli("generate", "--max-new-tokens", "2", "--no-stream", "--file", str(long))
    assert res.returncode == 0, res.stderr
    assert re.search(r"\[dotf\] prefill of \d+ tokens \[#{30}\] 30/30 layers", res.stderr), res.stderr[-500:]
    short = dotf_cli("generate", "--max-new-tokens", "2", "--no-stream", "--prompt", "Name a color.")
    assert short.returncode == 0 and "prefill of" not in short.stderr
