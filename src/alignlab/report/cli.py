"""``alignlab report PATH [PATH ...]``: report.md + a self-contained report.html; several paths: a
comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

from alignlab.core.cliargs import add_out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render a run, repro, probe, experiment or demo folder as HTML + Markdown, "
        "or compare several runs",
        description="One path: write report.md and a self-contained report.html (plots embedded, "
        "nothing fetched from the network) for a run folder (loss and dev curves, final "
        "metrics with chance and ceiling), a repro/multi-seed folder (every seed, mean "
        "with CI, verdicts), a probe run (accuracy per task, blind baselines, grounded "
        "gap), an experiment folder (claim tables and plots), the demo folder or a "
        "results JSON. Several paths: compare them side by side (metrics table, "
        "overlaid curves; --csv exports the metrics).",
    )
    p.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a run, repro, probe, experiment or demo folder, or a results JSON file",
    )
    add_out(
        p,
        default=None,
        help="Markdown file to write; the HTML page goes beside it "
        "(default: <folder>/report.md, or compare/report.md for several paths)",
    )
    p.add_argument(
        "--csv",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write every run's metrics as CSV (one row per run)",
    )
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from alignlab.report.render import compare, metrics_csv, render

    if len(args.paths) > 1:
        md = compare(args.paths, args.out, args.csv)
    else:
        md = render(args.paths[0], args.out)
        if args.csv is not None:
            metrics_csv(args.paths, args.csv)
    html = md.with_suffix(".html")
    print(f"report: {html}" + (f" (Markdown: {md})" if md.is_file() else ""))
    if args.csv is not None:
        print(f"metrics CSV: {args.csv}")
    return 0
