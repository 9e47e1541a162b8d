"""Docs that run: every shell command in README.md and docs/**/*.md is checked.

* ``alignlab ...`` (also under ``torchrun -m alignlab`` or ``python -m alignlab``): parsed by the real
  argument parser, so a flag, verb or choice that does not exist fails here;
* ``python benchmarks/X.py --flag``: the script exists and its ``--help`` lists every flag used;
* ``make X``: the Makefile has the target; ``pip install '.[a,b]'``: the extras exist;
* ``../shared/data/...`` paths: the file exists (when the shared data is laid out beside the checkout);
* blocks marked ``<!-- docs-test: run -->`` on the line before them are cheap and run for real, in
  order, from a scratch copy of the project root on the built-in data; blocks marked
  ``<!-- docs-test: user-data -->`` need data or models the user brings and are only parsed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from alignlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(
    r"^(?P<marker><!-- docs-test: (?P<mode>run|user-data) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    mode: str  # "run", "user-data" or "check"

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _commands() -> list[Command]:
    out = []
    for path in DOCS:
        source = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(source):
            if m.group("lang") not in SHELL_LANGS:
                continue
            first = source.count("\n", 0, m.start("body")) + 1
            joined, start = "", None
            for offset, raw in enumerate(m.group("body").splitlines()):
                line = raw.rstrip()
                if start is None:
                    start = first + offset
                if line.endswith("\\"):
                    joined += line[:-1] + " "
                    continue
                joined += line
                text = _strip_comment(joined).strip()
                if text and not text.startswith(("$ ", "export ", "cd ", "#")):
                    out.append(Command(str(path.relative_to(ROOT)), start, text, m.group("mode") or "check"))
                joined, start = "", None
    return out


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` that is not inside quotes."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return shlex.join(list(lexer))
    except ValueError:
        return line


COMMANDS = _commands()


def _alignlab_argv(cmd: Command) -> list[str] | None:
    """The arguments after ``alignlab`` (or ``-m alignlab``), skipping ``VAR=value``, ``nice -n 10`` and
    launcher prefixes; None when the command does not run alignlab."""
    words = shlex.split(cmd.text)
    if "&&" in words or "|" in words:
        return None
    for i, word in enumerate(words):
        if Path(word).name == "alignlab" and not word.startswith("-"):
            return words[i + 1 :]
        if word == "-m" and words[i + 1 : i + 2] == ["alignlab"]:
            return words[i + 2 :]
    return None


def test_the_docs_hold_commands_of_every_kind():
    kinds = {c.mode for c in COMMANDS}
    assert len(COMMANDS) > 50 and {"run", "user-data", "check"} <= kinds


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _alignlab_argv(c) is not None], ids=str)
def test_documented_alignlab_command_parses(cmd, capsys):
    parser = build_parser()
    try:
        parser.parse_args(_alignlab_argv(cmd))
    except SystemExit as e:
        pytest.fail(
            f"{cmd} does not parse: {capsys.readouterr().err.strip().splitlines()[-1:]} (exit {e.code})"
        )


def _benchmark_flags(cmd: Command) -> tuple[Path, list[str]] | None:
    words = shlex.split(cmd.text)
    scripts = [w for w in words if w.startswith("benchmarks/") and w.endswith(".py")]
    if not scripts:
        return None
    return ROOT / scripts[0], [
        w.split("=")[0] for w in words[words.index(scripts[0]) + 1 :] if w.startswith("--")
    ]


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _benchmark_flags(c) is not None], ids=str)
def test_documented_benchmark_exists_with_its_flags(cmd):
    script, flags = _benchmark_flags(cmd)
    assert script.is_file(), f"{cmd}: no {script}"
    if not flags:
        return
    proc = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, f"{cmd}: --help failed: {proc.stderr[-500:]}"
    missing = [f for f in flags if f not in proc.stdout]
    assert not missing, f"{cmd}: {script.name} has no {missing}"


def test_documented_make_targets_and_extras_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for cmd in COMMANDS:
        words = shlex.split(cmd.text)
        if words[:1] == ["make"]:
            assert set(words[1:2]) <= targets, f"{cmd}: no make target {words[1:2]}"
        for w in words:
            m = re.fullmatch(r"(?:\.|alignlab)\[([\w,-]+)\]", w)
            if m:
                unknown = set(m.group(1).split(",")) - extras
                assert not unknown, f"{cmd}: unknown extras {unknown}"


@pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data").is_dir(), reason="no ../shared/data beside this checkout"
)
def test_documented_shared_data_paths_exist():
    for cmd in COMMANDS:
        for w in re.findall(r"\.\./shared/data/[\w./-]+", cmd.text):
            assert (ROOT / w).exists(), f"{cmd}: {w} does not exist"
        assert not re.search(r"(?<![./\w])data/(3am|multi30k)/", cmd.text), (
            f"{cmd}: the caption data lives at ../shared/data/, not data/"
        )


RUN = [c for c in COMMANDS if c.mode == "run"]


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory):
    """An empty project root whose ../shared is the real one, so relative paths in the docs resolve."""
    base = tmp_path_factory.mktemp("docs")
    (base / "main").mkdir()
    shared = ROOT.parent / "shared"
    if shared.exists():
        (base / "shared").symlink_to(shared)
    return base / "main"


def test_cheap_documented_commands_run_in_order(scratch_root):
    """The blocks marked to run, in document order (a later command may read an earlier one's output)."""
    env = {**os.environ, "ALIGNLAB_QUIET": "1"}
    for cmd in RUN:
        argv = _alignlab_argv(cmd)
        assert argv is not None, f"{cmd}: only alignlab commands can be marked to run"
        proc = subprocess.run(
            [sys.executable, "-m", "alignlab", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=scratch_root,
            timeout=600,
        )
        assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}): {proc.stderr[-1500:]}"
