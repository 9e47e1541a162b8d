"""``alignlab report PATH``: a Markdown report (with plots) of a run, a repro run or a results file."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render a run, repro run or results JSON as Markdown with plots",
                       description="Write report.md (and plots/*.png) for a run folder (loss and dev curves), a "
                                   "`repro run` folder (per-seed spread) or any alignlab results JSON.")
    p.add_argument("path", type=Path, help="a run folder, a repro folder or a results JSON file")
    p.add_argument("--out", type=Path, default=None, help="Markdown file to write (default: <folder>/report.md)")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from alignlab.report.render import render

    print(render(args.path, args.out))
    return 0
