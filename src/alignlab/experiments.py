"""``alignlab experiment <name>``: the small-scale test of each method's headline claim.

Each method area has an ``experiment.py`` with

* ``DESCRIPTION`` — one line for ``--help``;
* ``run(out: Path, *, quick: bool, seeds: list[int] | None, overrides: dict) -> dict`` — runs the
  experiment (``quick`` settings for tests and the demo, full settings for docs/RESULTS.md), writes
  ``results.json`` and ``report.md`` under ``out`` and returns the results dict.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

from alignlab.core.config import check_run_dir, clear_run_dir, finished_run, parse_overrides
from alignlab.core.errors import AlignlabError
from alignlab.core.progress import info
from alignlab.core.seed import parse_seeds

EXPERIMENTS: dict[str, str] = {
    "repro": "alignlab.retrieval.experiment",
    "dcd": "alignlab.distill.dcd.experiment",
    "pesf": "alignlab.distill.pesf.experiment",
    "snare": "alignlab.probe.experiment",
    "3am": "alignlab.threeam.experiment",
    "commonit": "alignlab.commonit.experiment",
}


def available() -> dict[str, str]:
    out = {}
    for name, module in EXPERIMENTS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = module
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="run a method's headline-claim experiment",
                       description="Run the small-scale test of a paper's headline claim and write its "
                                   "results.json and report.md.")
    names = available()
    p.add_argument("name", choices=sorted(names), help="which experiment")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/experiment-<name>)")
    p.add_argument("--quick", action="store_true", help="small settings (minutes), as the tests use")
    p.add_argument("--overwrite", action="store_true", help="replace a finished experiment in --out")
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0-4 (default: the experiment's own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the experiment's config (repeatable)")
    p.set_defaults(run=run_experiment)


def run_experiment(args: argparse.Namespace) -> int:
    module = importlib.import_module(EXPERIMENTS[args.name])
    out = args.out or Path("runs") / f"experiment-{args.name}"
    try:
        seeds = parse_seeds(args.seeds) if args.seeds else None
    except AlignlabError as e:
        raise e.located(f"--seeds {args.seeds}") from None
    overrides = parse_overrides(args.overrides)
    # An experiment resumes an interrupted run in its folder (whatever it holds), but never changes a finished
    # one: that takes --overwrite.
    if not out.is_dir() or finished_run(out):
        check_run_dir(out, overwrite=args.overwrite)
    if args.overwrite:
        clear_run_dir(out)
    try:
        result = module.run(out, quick=args.quick, seeds=seeds, overrides=overrides)
    except AlignlabError as e:
        # The experiment's config classes know the key, not that it came from --set: say so.
        key = e.where[len("config key "):] if e.where and e.where.startswith("config key ") else None
        items = [i for i in args.overrides if key and i.partition("=")[0].strip() in (key, key.rpartition(".")[2])]
        if not items:
            raise
        raise type(e)(e.what, where=f"--set {items[-1]}", fix=e.fix) from None
    info(f"experiment {args.name}: report in {out / 'report.md'}")
    print(out / "report.md")
    return 0 if result is not None else 1
