"""Run one corpus case and judge its result against the promise for bad input.

The promise: exit status 2; stderr is exactly one line ``error: <what> (<where>); <fix>`` with a non-empty
where and fix; no traceback; nothing left in the case's folder; no finished run changed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from .fixtures import FINISHED, tree_hash

GENERIC_WHERE = re.compile(r"alignlab( [a-z-]+)*")
LINE = re.compile(r"error: (?P<what>.+) \((?P<where>[^()]+)\); (?P<fix>.+)")


def judge(code: int | None, stderr: str) -> list[str]:
    """What is wrong with (exit status, stderr) for a bad input; empty when it keeps the promise."""
    problems = []
    if code != 2:
        problems.append(f"exit status {code}, expected 2")
    if "Traceback" in stderr:
        problems.append("a traceback was printed")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, expected 1: {stderr[-600:]!r}")
    elif not (m := LINE.fullmatch(lines[0])) or not m["where"].strip() or not m["fix"].strip():
        problems.append(f"not 'error: what (where); fix': {lines[0]!r}")
    elif GENERIC_WHERE.fullmatch(m["where"]):
        # The CLI's last resort names only the command: the error itself should say where.
        problems.append(f"where is only the command: {lines[0]!r}")
    return problems


def prepare(
    case: tuple[str, str, tuple[str, ...]], places: dict[str, str], root: Path
) -> tuple[list[str], Path]:
    """The case's argv and its own folder (with the setup made in it)."""
    name, line, setup = case
    w = root / name
    w.mkdir(parents=True)
    for item in setup:
        kind, rel = item.split(":", 1)
        if kind == "dir":
            (w / rel).mkdir(parents=True)
        else:
            (w / rel).write_text("keep me\n")
    argv = shlex.split(line.format(w=w, **places))
    return argv, w


def watched(argv: list[str], places: dict[str, str], w: Path) -> dict[str, str]:
    """Hashes of the case's folder and of every fixture folder the command line names."""
    text = " ".join(argv)
    paths = {"w": w, **{k: Path(places[k]) for k in FINISHED if places[k] in text}}
    return {k: tree_hash(p) for k, p in paths.items()}


def run_inprocess(argv: list[str], cwd: Path) -> tuple[int | None, str]:
    """``alignlab.cli.main(argv)`` in this interpreter with stdout/stderr captured (the preloaded path)."""
    from alignlab.cli import main

    err, out = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(old)
    return code, err.getvalue()


def run_subprocess(
    argv: list[str], cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """``python -m alignlab ...`` in a new process."""
    try:
        p = subprocess.run(
            [sys.executable, "-m", "alignlab", *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    return p.returncode, p.stderr
