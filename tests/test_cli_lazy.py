"""`alignlab --help` lists every command without importing the areas; a command loads only its own."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from alignlab.cli import AREA_CLIS, COMMANDS, build_parser


def test_the_static_command_table_equals_what_the_modules_register():
    registered = {}
    for module in AREA_CLIS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        for action in sub._choices_actions:
            registered[action.dest] = (module, action.help)
    assert registered == COMMANDS
    assert list(registered) == list(COMMANDS)  # the order --help lists them in


def test_top_level_help_imports_no_area_and_no_torch():
    code = (
        "import sys, contextlib, io\nfrom alignlab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: main(['--help'])\n    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'alignlab.retrieval', 'alignlab.distill') "
        "if m in sys.modules]\n"
        f"print(heavy, all(name in out.getvalue() for name in {list(COMMANDS)!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] True"


def test_a_command_builds_only_its_own_area_but_parses_like_the_full_parser():
    lazy = build_parser("eval")
    full = build_parser()
    argv = ["eval", "retrieval", "--model", "tiny-dual", "--protocol", "shapes-1k", "--ks", "1,5"]
    a, b = vars(lazy.parse_args(argv)), vars(full.parse_args(argv))
    assert {k: v for k, v in a.items() if k != "run"} == {k: v for k, v in b.items() if k != "run"}
    assert a["run"] is b["run"]
