"""The bad-input corpus (tests/badinput/cases.py): every case ends in one clear line and changes nothing.

Each case runs in this interpreter through ``alignlab.cli.main(argv)`` (imports paid once, so the whole
corpus takes seconds), from its own empty working folder; a few also run as real ``python -m alignlab``
processes to check the top-level exit path. For each case: exit status 2, exactly one stderr line
``error: what (where); fix`` with a where and a fix, no traceback, nothing left in the case's folder, and
every finished run the command names byte-identical afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest

from .cases import CASES, SUBPROCESS
from .fixtures import build
from .harness import judge, prepare, run_inprocess, run_subprocess, watched

BY_ID = dict((c[0], c) for c in CASES)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The fixtures, built once per test session even under pytest-xdist (the workers share one copy)."""
    from alignlab.cli import main

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's temp folder, common to all workers
    root, done = shared / "badinput-fixtures", shared / "badinput-fixtures.json"
    with open(shared / "badinput-fixtures.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds, the others wait and read
        try:
            if not done.is_file():
                if root.exists():
                    shutil.rmtree(root)
                done.write_text(json.dumps(build(root, main)))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return json.loads(done.read_text())


@pytest.fixture(scope="module")
def case_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cases")


def _check(case, places, case_root, runner):
    argv, w = prepare(case, places, case_root / runner.__name__)
    before = watched(argv, places, w)
    code, err = runner(argv, w)
    problems = judge(code, err)
    after = watched(argv, places, w)
    problems += [
        f"{'the case folder' if k == 'w' else 'finished ' + k} changed"
        for k in before
        if before[k] != after[k]
    ]
    assert not problems, f"{case[0]}: {' '.join(argv)}\n" + "\n".join(problems)


def test_the_corpus_covers_every_area_with_at_least_100_cases():
    areas = {c[1].split()[0] for c in CASES}
    assert len(CASES) >= 100 and len(BY_ID) == len(CASES)
    assert {
        "data",
        "train",
        "eval",
        "distill",
        "probe",
        "ambiguity",
        "mmt",
        "commonit",
        "report",
        "experiment",
        "demo",
        "repro",
    } <= areas


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_clear_line_and_changes_nothing(case, places, case_root):
    _check(case, places, case_root, run_inprocess)


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_in_a_real_process(name, places, case_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("ALIGNLAB_QUIET", None)  # a real user's terminal: progress on, and still only the one line

    def subprocess_(argv, cwd):
        return run_subprocess(argv, cwd, env=env)

    _check(BY_ID[name], places, case_root, subprocess_)


def test_a_bug_shows_its_traceback_and_asks_for_a_report(tmp_path):
    """A non-user error (here: a command whose code raises ZeroDivisionError) is not turned into one line."""
    code = (
        "import sys, alignlab.data.cli as c\n"
        "def boom(args): return 1 / 0\n"
        "c.run_check = boom\n"
        "from alignlab.cli import main\n"
        "sys.exit(main(['data', 'check', '.']))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 1
    assert "Traceback" in p.stderr and "ZeroDivisionError" in p.stderr
    assert "bug in alignlab" in p.stderr.splitlines()[-1] and "please report it" in p.stderr
