"""``alignlab experiment <name>``: the small-scale test of each method's headline claim.

Each method area has an ``experiment.py`` with

* ``DESCRIPTION`` — one line for ``--help``;
* ``run(out: Path, *, quick: bool, seeds: list[int] | None, overrides: dict) -> dict`` — runs the
  experiment (``quick`` settings for tests and the demo, full settings for docs/RESULTS.md), writes
  ``results.json`` and ``report.md`` under ``out`` (:func:`alignlab.core.results.write_results`) and
  returns the results dict;
* ``render_report(results: dict) -> str`` — the report, a pure function of ``results.json``: the
  pre-registered plan first, then the claims with their verdicts (:mod:`alignlab.core.analysis`), then
  anything exploratory under its own heading;
* ``SUMMARY`` — ``{"paper": ..., "claim": ...}`` for the row of docs/RESULTS.md; the row's verdicts
  come from ``results["claims"]`` (the rows :func:`alignlab.core.analysis.analyse` returns).

docs/results/NAME.md is ``alignlab experiment NAME --render docs/results/NAME.json --to
docs/results/NAME.md`` and docs/RESULTS.md is ``alignlab experiment summary --to docs/RESULTS.md``;
tests/test_results_docs.py regenerates both and compares.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from pathlib import Path

from alignlab.core.cliargs import add_out, add_overrides, add_overwrite
from alignlab.core.config import check_run_dir, clear_run_dir, finished_run, parse_overrides
from alignlab.core.errors import AlignlabError, ConfigError
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
    p = sub.add_parser(
        "experiment",
        help="run a method's headline-claim experiment",
        description="Run the small-scale test of a paper's headline claim and write its "
        "results.json and report.md.",
    )
    names = available()
    p.add_argument(
        "name",
        choices=[*sorted(names), "summary"],
        help="which experiment; 'summary' renders docs/RESULTS.md from the stored results",
    )
    add_out(p, default=None, help="output folder (default: runs/experiment-<name>)")
    p.add_argument("--quick", action="store_true", help="small settings (minutes), as the tests use")
    add_overwrite(p, help="replace a finished experiment in --out")
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0-4 (default: the experiment's own)")
    add_overrides(p, help="override a setting of the experiment's config (repeatable)")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="render the report of a stored results.json (no run); with 'summary', the folder of "
        "NAME.json files (default docs/results)",
    )
    p.add_argument(
        "--to",
        type=Path,
        default=None,
        metavar="PAGE",
        help="with --render or summary: write the page here instead of printing it",
    )
    p.set_defaults(run=run_experiment)


RESULTS_DIR = Path("docs/results")
SUMMARY_HEADER = """# Results: the six papers' claims, tested at small scale

Each method ships an experiment, `alignlab experiment NAME`, that tests its paper's headline claims on
data where the truth is known. Every experiment declares its claims in its config before it runs (arms,
metric, expected direction, equivalence margin) and is analysed the same way
(`alignlab.core.analysis`): the training run is the unit, arms are paired by seed, an exact sign-flip
test (or a paired t-test where declared) with Holm's correction across the experiment's claims, a TOST
at the declared margin before any "no effect", and one vocabulary: improves / hurts / equivalent within
±m / inconclusive. This page and every page it links are rendered by code from the stored results
(`alignlab experiment summary --to docs/RESULTS.md`; `alignlab experiment NAME --render
docs/results/NAME.json --to docs/results/NAME.md`); tests/test_results_docs.py checks that they agree.
"""


def load_results(path: Path, name: str) -> dict:
    """A stored results.json of experiment ``name`` (a clear error for another experiment's file)."""
    from alignlab.core.errors import DataError
    from alignlab.core.io import read_json

    data = read_json(path)
    if not isinstance(data, dict) or data.get("experiment") != name:
        found = data.get("experiment") if isinstance(data, dict) else None
        raise DataError(
            f"not the results of experiment {name!r} (experiment: {found!r})",
            where=str(path),
            fix=f"give the results.json that `alignlab experiment {name}` wrote",
        )
    return data


def render_summary(results_dir: Path = RESULTS_DIR) -> str:
    """docs/RESULTS.md: one row per experiment, verdicts as the analysis gave them, links to the pages."""
    from alignlab.core.analysis import verdict_line
    from alignlab.core.tables import markdown_table

    rows = []
    for name, module_name in EXPERIMENTS.items():
        module = importlib.import_module(module_name)
        data = load_results(results_dir / f"{name}.json", name)
        claims = data.get("claims") or []
        supported = sum(bool(r["supported"]) for r in claims)
        verdicts = "<br>".join(verdict_line(r) for r in claims)
        seeds = sorted({r["n"] for r in claims})
        rows.append(
            [
                module.SUMMARY["paper"],
                module.SUMMARY["claim"],
                f"{supported}/{len(claims)}",
                verdicts,
                ", ".join(map(str, seeds)),
                f"`alignlab experiment {name}`",
                f"[results/{name}.md](results/{name}.md)",
            ]
        )
    table = markdown_table(
        [
            "paper",
            "claims tested",
            "supported as declared",
            "verdicts (Holm-adjusted)",
            "seeds",
            "command",
            "details",
        ],
        rows,
    )
    return SUMMARY_HEADER + "\n" + table + "\n"


def _emit(text: str, to: Path | None) -> None:
    from alignlab.core.io import write_text

    if to is None:
        print(text, end="")
    else:
        write_text(to, text)
        info(f"wrote {to}")


def render_command(args: argparse.Namespace) -> int:
    """``--render`` and ``summary``: pages from stored results, no training."""
    if args.name == "summary":
        _emit(render_summary(args.render or RESULTS_DIR), args.to)
        return 0
    data = load_results(args.render, args.name)  # validate the file before importing the experiment
    module = importlib.import_module(EXPERIMENTS[args.name])
    _emit(module.render_report(data), args.to)
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    if args.name == "summary" or args.render is not None:
        return render_command(args)
    if args.to is not None:
        raise ConfigError(
            "--to needs --render (or the summary)", where="--to", fix="add --render RESULTS_JSON"
        )
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
        key = e.where[len("config key ") :] if e.where and e.where.startswith("config key ") else None
        items = [
            i for i in args.overrides if key and i.partition("=")[0].strip() in (key, key.rpartition(".")[2])
        ]
        if not items:
            raise
        raise type(e)(e.what, where=f"--set {items[-1]}", fix=e.fix) from None
    info(f"experiment {args.name}: report in {out / 'report.md'}")
    print(out / "report.md")
    return 0 if result is not None else 1
