"""``alignlab demo``: every method's main job on the built-in data, end to end, with one report.

Each area contributes a stage: a module with ``STAGE_TITLE`` and ``demo_stage(ctx: DemoContext) ->
list[str]`` returning Markdown lines for the report. Stages share artifacts (the generated
ShapesWorld, trained checkpoints) through ``ctx.artifacts``. ``--quick`` keeps the whole demo under two
minutes on 2 CPU cores; the full demo stays under ten.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab.core.cliargs import add_out, add_seed
from alignlab.core.errors import ConfigError
from alignlab.core.io import write_text
from alignlab.core.progress import info

# (stage name, module); a stage that needs another's artifacts comes after it.
STAGES: tuple[tuple[str, str], ...] = (
    ("data", "alignlab.data.demo"),
    ("retrieval", "alignlab.retrieval.demo"),
    ("probe", "alignlab.probe.demo"),
    ("dcd", "alignlab.distill.dcd.demo"),
    ("pesf", "alignlab.distill.pesf.demo"),
    ("ambiguity", "alignlab.threeam.demo"),
    ("commonit", "alignlab.commonit.demo"),
)


@dataclass
class DemoContext:
    out: Path
    quick: bool = False
    seed: int = 0
    artifacts: dict[str, Any] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        d = self.out / name
        d.mkdir(parents=True, exist_ok=True)
        return d


def available_stages() -> list[tuple[str, str]]:
    out = []
    for name, module in STAGES:
        try:
            if importlib.util.find_spec(module) is not None:
                out.append((name, module))
        except ModuleNotFoundError:
            pass
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run every method on the built-in data and write a report",
        description="Generate ShapesWorld, train the tiny models and run each method's "
        "main job on them; ends by printing where the report is.",
    )
    add_out(p, default=Path("demo-out"), help="output folder (default: demo-out)")
    p.add_argument("--quick", action="store_true", help="small settings: the whole demo in under 2 minutes")
    add_seed(p, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated stages to run (default: all): " + ", ".join(n for n, _ in STAGES),
    )
    p.set_defaults(run=run_demo)


def _check_out(out: Path, stage_names: list[str]) -> None:
    """--out may be new, empty or an earlier demo (re-running it redoes the demo); nothing else is touched."""
    from alignlab.core.config import check_run_dir

    if not out.is_dir() or not any(out.iterdir()):
        check_run_dir(out)  # a file, a folder inside a file, an unwritable place
        return
    report = out / "report.md"
    is_demo = report.is_file() and report.read_text(encoding="utf-8", errors="replace").startswith(
        "# alignlab demo"
    )
    if not is_demo and not {p.name for p in out.iterdir()} <= {*stage_names, "report.md", "report.html"}:
        raise ConfigError(
            "--out holds files that are not an alignlab demo",
            where=str(out),
            fix="choose a new or empty folder, or the folder of an earlier demo",
        )


def run_demo(args: argparse.Namespace) -> int:
    stages = available_stages()
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {n for n, _ in stages})
        if unknown:
            raise ConfigError(
                f"unknown demo stage(s) {', '.join(unknown)}",
                where=f"--only {args.only}",
                fix=f"choose from {', '.join(n for n, _ in stages)}",
            )
        stages = [(n, m) for n, m in stages if n in wanted]
    _check_out(args.out, [n for n, _ in available_stages()])
    ctx = DemoContext(out=args.out, quick=args.quick, seed=args.seed)
    ctx.out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    lines = [
        "# alignlab demo",
        "",
        f"Settings: {'quick' if ctx.quick else 'full'}, seed {ctx.seed}. "
        f"Regenerate with `alignlab demo --out {ctx.out}{' --quick' if ctx.quick else ''}`.",
        "",
    ]
    timings = []
    for name, module in stages:
        mod = importlib.import_module(module)
        info(f"== demo stage: {name}")
        t0 = time.time()
        stage_lines = mod.demo_stage(ctx)
        dt = time.time() - t0
        timings.append((name, dt))
        lines += [f"## {mod.STAGE_TITLE}", "", *stage_lines, "", f"_stage time: {dt:.1f} s_", ""]
        # Write after every stage so a long demo leaves a readable report of what is done.
        write_text(ctx.out / "report.md", "\n".join(lines) + "\n")
    total = time.time() - t_all
    lines += [
        "## Timings",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {n} | {t:.1f} |" for n, t in timings],
        f"| total | {total:.1f} |",
        "",
    ]
    write_text(ctx.out / "report.md", "\n".join(lines) + "\n")
    from alignlab.report.render import render

    render(ctx.out)  # report.html beside report.md: every stage on one page, plots embedded
    print(
        f"demo finished in {total:.0f} s; report: {ctx.out / 'report.md'} (one page with every plot: "
        f"{ctx.out / 'report.html'})"
    )
    return 0
