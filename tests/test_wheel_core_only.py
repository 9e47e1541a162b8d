"""The built wheel with the core dependencies only: every command's --help works, a core command runs,
and one command per optional extra ends in one line naming that extra.

The wheel is built from this checkout and installed with ``pip install --no-deps --target``. The core
dependencies (torch, numpy, Pillow, PyYAML, tqdm, safetensors, SciPy and what they need) are made
visible through a folder of links to this environment's copies, and Python runs with ``-S`` so that no
other installed package (matplotlib, transformers, nltk, ...) can be imported.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from alignlab.cli import build_parser, leaf_parsers
from extras_cases import EXTRA_CASES  # tests/extras_cases.py

ROOT = Path(__file__).resolve().parents[1]


SCRIPT = textwrap.dedent("""
    import argparse, contextlib, io, json, sys
    from alignlab.cli import build_parser, leaf_parsers, main

    report = {"help": {}, "cases": [], "optional_loaded": []}
    for path in (name.split() for name in leaf_parsers(build_parser())):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                main([*path, "--help"])
                code = 0
            except SystemExit as e:
                code = e.code
        report["help"][" ".join(path)] = [code, "usage:" in out.getvalue()]
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(argv)
        report["cases"].append([code, err.getvalue()])
    report["optional_loaded"] = sorted(
        m for m in ("matplotlib", "transformers", "nltk", "sklearn", "sacrebleu") if m in sys.modules
    )
    print(json.dumps(report))
""")


def _core_closure() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    seen: set[str] = set()
    stack = [Requirement(d).name for d in deps]
    while stack:
        name = stack.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return seen


def _link_core(target: Path) -> None:
    target.mkdir()
    for name in _core_closure():
        dist = md.distribution(name)
        site = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = site / top
            if top not in ("..", "__pycache__", "bin") and src.exists() and not (target / top).exists():
                (target / top).symlink_to(src)


@pytest.fixture(scope="module")
def core_only(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if build.returncode != 0:
        pytest.fail(f"building the wheel failed: {build.stderr[-2000:]}")
    wheel = next((tmp / "dist").glob("alignlab-*.whl"))
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(tmp / "site"),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    _link_core(tmp / "core")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ALIGNLAB"))}
    env.update(
        PYTHONPATH=f"{tmp / 'site'}{os.pathsep}{tmp / 'core'}", PYTHONNOUSERSITE="1", ALIGNLAB_QUIET="1"
    )
    return tmp, wheel, env


def test_the_wheel_ships_the_license_and_the_example_configs(core_only):
    import zipfile

    _, wheel, _ = core_only
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert {"alignlab/configs/train.yaml", "alignlab/configs/dcd-teacher.yaml", "alignlab/py.typed"} <= set(
        names
    )


def test_core_only_every_help_works_and_each_extra_fails_in_one_line(core_only):
    tmp, _, env = core_only
    argvs = [[a.replace("{tmp}", str(tmp)) for a in argv] for argv, _ in EXTRA_CASES]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", SCRIPT, json.dumps(argvs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["help"]) == set(leaf_parsers(build_parser()))  # every command exists without the extras
    bad_help = {cmd: v for cmd, v in report["help"].items() if v != [0, True]}
    assert not bad_help, bad_help
    for (argv, extra), (code, err) in zip(EXTRA_CASES, report["cases"], strict=True):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (argv, code, err)
        assert lines[0].startswith("error: ") and f"pip install 'alignlab[{extra}]'" in lines[0], (argv, err)
    assert not (tmp / "out").exists()
    # --help and the checks imported no optional package (they would be missing here anyway)
    assert report["optional_loaded"] == []


def test_core_only_a_core_command_really_runs(core_only):
    tmp, _, env = core_only
    out = tmp / "shapes"
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            "-m",
            "alignlab",
            "data",
            "shapes",
            "--out",
            str(out),
            "--train",
            "4",
            "--val",
            "2",
            "--test",
            "2",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "dataset.json").is_file() or any(out.glob("*.json"))
