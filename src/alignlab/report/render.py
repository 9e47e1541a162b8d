"""``alignlab report``: a folder alignlab wrote -> ``report.md`` and one self-contained ``report.html``.

Understands every folder alignlab writes:

* a **run** (``results.json`` + ``log.jsonl``): identity, best epoch, the metrics in natural order,
  the training loss (the mean of each logging interval) and dev curves, and the final R@K with the
  chance level and the ceiling marked;
* a **multi-seed / repro** folder (``aggregate.json``, or ``seed-*/results.json`` while it runs):
  mean ± sd, min–max and the 95% CI cut to each metric's range, every seed's value, the sanity
  verdicts (an oracle gets 100, random scores sit at chance) and every seed's curves;
* a **probe** run (``probe eval``): accuracy per task with its CI, the blind baselines and the
  grounded gap;
* an **experiment** folder (``alignlab experiment NAME``): its claim tables and plots, and every
  verdict it recorded;
* the **demo** folder (``alignlab demo``): every stage on one page plus the training curves of its runs;
* any other alignlab **results JSON**: identity and metrics.

:func:`compare` puts several of them side by side (metrics table, overlaid curves, CSV export).
In the HTML page every plot is embedded, so the file can be mailed or archived on its own.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignlab.core.errors import DataError
from alignlab.core.io import read_json, write_text
from alignlab.report import plots
from alignlab.report.fmt import clip_ci, fmt_metric, fmt_num, is_number, order_names, ordered
from alignlab.report.page import Page

DEMO_TITLE = "# alignlab demo"


# --- reading ---------------------------------------------------------------------------------------------


def read_log(run: Path) -> dict[str, Any]:
    """Loss and dev curves of a run's ``log.jsonl`` (unreadable lines are skipped, as a crash can cut one).

    ``interval_mean`` says whether the loss is the mean over each logging interval (the loop writes
    ``lr`` and ``samples_s`` with those lines) rather than one step's loss (older logs).
    """
    out: dict[str, Any] = {"loss_steps": [], "loss": [], "dev_steps": [], "dev": {}, "interval_mean": False}
    path = run / "log.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not is_number(rec.get("step")):
            continue
        if isinstance(rec.get("dev"), dict):
            out["dev_steps"].append(rec["step"])
            for k, v in rec["dev"].items():
                if is_number(v):
                    out["dev"].setdefault(k, []).append(v)
        elif is_number(rec.get("loss")):
            out["loss_steps"].append(rec["step"])
            out["loss"].append(rec["loss"])
            out["interval_mean"] = out["interval_mean"] or "samples_s" in rec or "lr" in rec
    # Keep only dev metrics logged at every evaluation, so steps and values line up.
    out["dev"] = {k: v for k, v in out["dev"].items() if len(v) == len(out["dev_steps"])}
    return out


def _load(path: Path) -> Any:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(
            "not an alignlab results file: the JSON is not an object",
            where=str(path),
            fix="give a run, repro, probe, experiment or demo folder, or a results.json",
        )
    return data


def _seed_dirs(folder: Path) -> list[Path]:
    def seed_no(p: Path) -> tuple[int, str]:
        tail = p.name.split("-", 1)[-1]
        return (int(tail), "") if tail.lstrip("-").isdigit() else (0, p.name)

    return sorted((p for p in folder.glob("seed-*") if (p / "results.json").is_file()), key=seed_no)


def detect(path: Path) -> tuple[str, Path, dict[str, Any] | None]:
    """(kind, folder, data) of ``path``: kind is run, seeds, probe, experiment, demo or result."""
    if path.is_file():
        data = _load(path)
        return _kind_of(data, path), path.parent, data
    if not path.is_dir():
        raise DataError("not found", where=str(path), fix="check the path")
    if (path / "aggregate.json").is_file():
        return "seeds", path, _load(path / "aggregate.json")
    if (path / "results.json").is_file():
        data = _load(path / "results.json")
        return _kind_of(data, path / "results.json"), path, data
    md = path / "report.md"
    if md.is_file() and md.read_text(encoding="utf-8", errors="replace").startswith(DEMO_TITLE):
        return "demo", path, None
    if _seed_dirs(path):
        return "seeds", path, _aggregate_on_the_fly(path)
    raise DataError(
        "no results.json, aggregate.json or demo report.md here",
        where=str(path),
        fix="give a run, repro, probe, experiment or demo folder, or a results JSON file",
    )


def _kind_of(data: dict[str, Any], source: Path) -> str:
    if "per_seed" in data and isinstance(data.get("metrics"), dict):
        return "seeds"
    if data.get("task") == "probe" and isinstance(data.get("probe"), dict):
        return "probe"
    if "experiment" in data or "verdict" in data or "verdicts" in data:
        return "experiment"
    if isinstance(data.get("metrics"), dict):
        return "run" if (source.parent / "log.jsonl").is_file() else "result"
    raise DataError(
        "not an alignlab results file: no metrics, aggregate, probe or experiment keys",
        where=str(source),
        fix="give a file written by alignlab (results.json or aggregate.json)",
    )


def _aggregate_on_the_fly(folder: Path) -> dict[str, Any]:
    """What ``aggregate.json`` will hold, from the seeds finished so far (a repro run still under way)."""
    from alignlab.core.stats import summarize

    results = [_load(p / "results.json") for p in _seed_dirs(folder)]
    names = [
        k
        for k in results[0].get("metrics", {})
        if all(is_number(r.get("metrics", {}).get(k)) for r in results)
    ]
    return {
        "seeds": [r.get("seed") for r in results],
        "n_seeds": len(results),
        "metrics": {k: summarize([r["metrics"][k] for r in results]) for k in names},
        "per_seed": {str(r.get("seed")): r["metrics"] for r in results},
        "partial": True,
    }


# --- blocks shared by several kinds -----------------------------------------------------------------------


def _metrics_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    return [[k, fmt_metric(k, v)] for k, v in ordered(metrics).items() if is_number(v) or v is None]


def _provenance(page: Page, data: Mapping[str, Any]) -> None:
    m = data.get("manifest") or {}
    parts = [
        f"{k} {fmt_num(m[k]) if is_number(m[k]) else m[k]}"
        for k in ("alignlab", "torch", "git", "device", "wall_s")
        if m.get(k) not in (None, "")
    ]
    if parts:
        page.para("Provenance: " + ", ".join(parts) + ".", note=True)


def _chance_and_ceiling(data: Mapping[str, Any]) -> tuple[dict[str, float] | None, dict[str, float]]:
    sanity = data.get("sanity") or {}
    chance = sanity.get("chance") or data.get("chance")
    ceiling = sanity.get("oracle") or {}
    metrics = data.get("metrics") or {}
    # A perfect ranker under the labels the run was scored with gets 100 at every K.
    ceiling = {k: float(ceiling.get(k, 100.0)) for k in metrics if "R@" in k}
    return (dict(chance) if isinstance(chance, dict) else None), ceiling


def _identity(data: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {data[k]}" for k in ("task", "model", "data", "seed") if data.get(k) is not None)


# --- one page per kind --------------------------------------------------------------------------------------


def _run_page(folder: Path, data: dict[str, Any], source_name: str) -> Page:
    page = Page(f"Run: {_identity(data) or source_name}")
    best = data.get("best") or {}
    if best:
        page.para(
            f"Best epoch {best.get('epoch')} by dev {best.get('metric')} ({fmt_num(best.get('value'))}); "
            f"{fmt_num(data.get('steps'))} optimizer steps."
            if data.get("steps")
            else f"Best epoch {best.get('epoch')} by dev {best.get('metric')} ({fmt_num(best.get('value'))})."
        )
    page.heading("Final metrics")
    page.table(["metric", "value"], _metrics_rows(data.get("metrics", {})))
    log = read_log(folder)
    if log["loss"] or log["dev"]:
        page.heading("Curves")
        if log["loss"] and not log["interval_mean"]:
            page.para(
                "This log holds the loss of single logged steps (written before the loop logged interval "
                "means): a small last batch can show up as a false dip.",
                note=True,
            )
        page.figure(
            plots.curves(
                {folder.name: log},
                "curves.png",
                "training loss (mean of each logging interval) and the dev metric per evaluation",
            )
        )
    chance, ceiling = _chance_and_ceiling(data)
    fig = plots.final_metrics(
        data.get("metrics", {}),
        chance,
        ceiling,
        "final.png",
        "final R@K; dashed: chance (random ranking), dotted: ceiling (a perfect ranker)",
    )
    if fig is not None:
        page.figure(fig)
        if chance is None:
            page.para(
                "The chance level is not recorded in this results.json (a `repro run` folder records it); "
                "the ceiling is a perfect ranker under the run's labels (100 at every K).",
                note=True,
            )
    _provenance(page, data)
    return page


def _seeds_page(folder: Path, agg: dict[str, Any]) -> Page:
    seeds = agg.get("seeds") or list(agg.get("per_seed", {}))
    page = Page(f"Seeds {', '.join(str(s) for s in seeds)}" + (f": {folder.name}" if folder.name else ""))
    if agg.get("partial"):
        page.para("No aggregate.json yet: these are the seeds finished so far.", note=True)
    chance, ceiling = _chance_and_ceiling(agg)
    oracle = (agg.get("sanity") or {}).get("oracle") or {}
    header = ["metric", "mean ± sd", "min", "max", "range", "95% CI"]
    if chance:
        header += ["chance", "oracle"]
    rows, clipped = [], False
    for m, s in ordered(agg.get("metrics", {})).items():
        if not isinstance(s, dict) or not is_number(s.get("mean")):
            continue
        lo, hi = clip_ci(m, s.get("ci_low", float("nan")), s.get("ci_high", float("nan")))
        clipped = clipped or (lo, hi) != (s.get("ci_low"), s.get("ci_high"))
        row = [
            m,
            f"{fmt_metric(m, s['mean'])} ± {fmt_metric(m, s.get('sd'))}",
            fmt_metric(m, s.get("min")),
            fmt_metric(m, s.get("max")),
            fmt_metric(m, s.get("range")),
            f"[{fmt_metric(m, lo)}, {fmt_metric(m, hi)}]",
        ]
        if chance:
            row += [fmt_metric(m, chance.get(m)), fmt_metric(m, oracle.get(m))]
        rows.append(row)
    page.heading("Over seeds")
    page.table(header, rows)
    if clipped:
        page.para(
            "CIs are t-intervals over seeds, cut to the range a metric can take (a count or rank is never "
            "negative, a percentage stays in [0, 100]).",
            note=True,
        )
    per_seed = agg.get("per_seed") or {}
    if per_seed:
        names = [n for n in order_names(next(iter(per_seed.values()))) if "R@" in n or n == "rsum"]
        page.heading("Every seed")
        page.table(
            ["seed", *names], [[s, *(fmt_metric(n, r.get(n)) for n in names)] for s, r in per_seed.items()]
        )
        page.figure(
            plots.seeds(
                per_seed,
                agg.get("metrics", {}),
                "seeds.png",
                "every seed (blue) and the mean with its 95% CI (red)",
            )
        )
    sanity = agg.get("sanity") or {}
    checks = [(k[:-3], v) for k, v in sanity.items() if k.endswith("_ok")]
    if checks:
        page.heading("Verdicts")
        page.table(["sanity check", "verdict"], [[name, "pass" if ok else "FAIL"] for name, ok in checks])
    if chance:
        page.figure(
            plots.final_metrics(
                {k: s["mean"] for k, s in agg.get("metrics", {}).items() if isinstance(s, dict)},
                chance,
                ceiling,
                "final.png",
                "mean test R@K over seeds; dashed: chance, dotted: ceiling (oracle)",
            )
        )
    logs = {p.name: read_log(p) for p in _seed_dirs(folder)}
    fig = plots.curves(
        {k: v for k, v in logs.items() if v["loss"] or v["dev"]},
        "seed_curves.png",
        "every seed's training loss (interval mean) and dev curve",
    )
    if fig is not None:
        page.heading("Curves")
        page.figure(fig)
    return page


def _probe_page(folder: Path, data: dict[str, Any], md_exists: bool) -> Page:
    run = data["probe"]
    page = Page(f"Probe: {_identity(data)}")
    rows = []
    for task, entry in (run.get("model", {}).get("tasks") or {}).items():
        a = entry.get("accuracy") if isinstance(entry, dict) else None
        if not a:
            continue
        gap = ((run.get("gaps") or {}).get(task) or {}).get("accuracy") or {}
        blind = gap.get("best_blind_pct")
        if blind is None and is_number(gap.get("gap_pct")):
            blind = a["acc_pct"] - gap["gap_pct"]
        lo, hi = clip_ci("acc_pct", a.get("ci_low", a["acc_pct"]), a.get("ci_high", a["acc_pct"]))
        rows.append(
            {
                "task": task,
                "acc": a["acc_pct"],
                "ci_low": lo,
                "ci_high": hi,
                "chance": a.get("chance_pct", 0.0),
                "blind": blind,
                "best_blind": gap.get("best_blind"),
                "gap": gap,
            }
        )
    page.heading("Accuracy per task")
    page.table(
        [
            "task",
            "accuracy [95% CI]",
            "chance",
            "best blind baseline",
            "blind acc",
            "grounded gap [95% CI]",
            "p",
        ],
        [
            [
                r["task"],
                f"{_pct(r['acc'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
                _pct(r["chance"]),
                str(r["best_blind"] or "—"),
                _pct(r["blind"]),
                (
                    f"{_pct(r['gap'].get('gap_pct'), True)} [{_pct(r['gap'].get('ci_low'), True)}, "
                    f"{_pct(r['gap'].get('ci_high'), True)}]"
                )
                if r["gap"]
                else "—",
                fmt_num(r["gap"].get("p")) if r["gap"] else "—",
            ]
            for r in rows
        ],
    )
    page.para(
        "Grounded gap = model − best blind baseline (a model that never looks at the image); "
        "CIs: 95% bootstrap over items; ties count as wrong.",
        note=True,
    )
    page.figure(
        plots.probe_tasks(
            rows,
            "probe_tasks.png",
            "accuracy per task with its 95% CI, the best blind baseline and chance (dashed)",
        )
    )
    blinds = run.get("blinds") or {}
    if blinds:
        tasks = [r["task"] for r in rows]
        page.heading("Blind baselines")
        page.table(
            ["baseline", *tasks],
            [
                [
                    b,
                    *(
                        _pct(((r.get("tasks") or {}).get(t) or {}).get("accuracy", {}).get("acc_pct"))
                        for t in tasks
                    ),
                ]
                for b, r in blinds.items()
            ],
        )
    if md_exists:
        page.heading("Full tables (report.md)")
        page.markdown(_strip_title((folder / "report.md").read_text(encoding="utf-8")), folder)
    else:
        from alignlab.probe.evaluate import format_report

        # An older results layout can lack what the full tables need: the summary above is what it holds.
        with contextlib.suppress(KeyError, TypeError):
            page.markdown(_strip_title(format_report(run)), folder)
    _embed_folder_plots(page, folder, already="")
    _provenance(page, data)
    return page


def _pct(v: Any, signed: bool = False) -> str:
    return fmt_metric("acc_pct", v, signed)


def _verdicts(obj: Any, path: str = "", out: list[list[str]] | None = None) -> list[list[str]]:
    """Every recorded verdict (a ``verdict`` text or a ``holds`` flag) in an experiment's results."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        claim = obj.get("claim") or obj.get("name") or path
        if isinstance(obj.get("holds"), bool):
            out.append(
                [str(claim), "holds" if obj["holds"] else "does not hold", str(obj.get("verdict", ""))]
            )
        elif isinstance(obj.get("verdict"), str):
            out.append([str(claim), "", obj["verdict"]])
        for k, v in obj.items():
            if k not in ("verdict", "config", "manifest"):
                _verdicts(v, f"{path}/{k}" if path else k, out)
    elif isinstance(obj, list) and len(obj) < 200:
        for i, v in enumerate(obj):
            _verdicts(v, f"{path}[{i}]", out)
    return out


def _experiment_page(folder: Path, data: dict[str, Any]) -> Page:
    name = data.get("experiment") or data.get("task") or folder.name
    page = Page(f"Experiment: {name}" + (" (quick settings)" if data.get("quick") else ""))
    claims = data.get("claims")
    if isinstance(claims, list) and claims and all(isinstance(r, dict) and "verdict" in r for r in claims):
        # the pre-registered claims as core.analysis left them: one standard for every experiment
        page.heading("Pre-registered claims and verdicts")
        page.table(
            [
                "claim",
                "seeds",
                "Δ (mean)",
                "95% CI",
                "p (difference, Holm)",
                "p (TOST, Holm)",
                "verdict",
                "as declared",
            ],
            [
                [
                    str(r["claim"]),
                    str(r["n"]),
                    f"{r['mean_diff']:+.2f}",
                    f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]",
                    f"{r['p_difference']:.2g}",
                    f"{r['p_equivalence']:.2g}",
                    str(r["verdict"]),
                    "yes" if r["supported"] else f"no (declared: {r['plan']['direction']})",
                ]
                for r in claims
            ],
        )
        verdicts = []
    else:
        verdicts = _verdicts({k: v for k, v in data.items() if k != "verdict"})
    top = data.get("verdict")
    if isinstance(top, str):
        page.para(f"**Verdict:** {top}")
    elif isinstance(top, dict):
        verdicts = _verdicts(top) + verdicts
    if verdicts:
        page.heading("Claims and verdicts")
        page.table(["claim", "holds?", "verdict"], verdicts[:60])
    md = folder / "report.md"
    already = ""
    if md.is_file():
        already = md.read_text(encoding="utf-8")
        page.heading("Claim tables (report.md)")
        page.markdown(_strip_title(already), folder)
    _embed_folder_plots(page, folder, already)
    _provenance(page, data)
    return page


def _embed_folder_plots(page: Page, folder: Path, already: str) -> None:
    from alignlab.report.page import Figure

    pngs = [p for p in sorted((folder / "plots").glob("*.png")) if p.name not in already]
    if pngs:
        page.heading("Plots")
        for p in pngs:
            page.figure(Figure(p.read_bytes(), p.name, p.stem.replace("_", " ")))


def _demo_page(folder: Path) -> Page:
    text = (folder / "report.md").read_text(encoding="utf-8")
    page = Page("alignlab demo")
    page.markdown(_strip_title(text), folder)
    stages: dict[str, dict[str, Any]] = {}
    for log in sorted(folder.glob("*/*/log.jsonl")) + sorted(folder.glob("*/*/*/log.jsonl")):
        run = log.parent
        stage = run.relative_to(folder).parts[0]
        curves = read_log(run)
        if curves["loss"] or curves["dev"]:
            stages.setdefault(stage, {})[str(run.relative_to(folder / stage))] = curves
    if stages:
        # In the order the stages ran: the order of the demo's timing table.
        ran = re.findall(r"^\| ([\w-]+) \| [\d.]+ \|$", text, flags=re.M)
        page.heading("Training curves of the demo's runs")
        for stage, series in sorted(
            stages.items(), key=lambda kv: ran.index(kv[0]) if kv[0] in ran else len(ran)
        ):
            page.heading(stage, level=3)
            page.figure(
                plots.curves(
                    series,
                    f"demo_{stage}_curves.png",
                    f"{stage}: training loss (interval mean) and dev metric of " + ", ".join(series),
                )
            )
    return page


def _result_page(data: dict[str, Any], source_name: str) -> Page:
    page = Page(_identity(data) or source_name)
    page.table(["metric", "value"], _metrics_rows(data.get("metrics", {})))
    _provenance(page, data)
    return page


def _strip_title(md: str) -> str:
    """A foreign report without its ``# title`` line (the page has its own)."""
    return re.sub(r"\A# [^\n]*\n+", "", md)


# --- entry points -------------------------------------------------------------------------------------------


def build_page(path: str | os.PathLike) -> tuple[Page, Path, bool]:
    """(page, folder, whether the folder's own report.md is the page's source and must be kept)."""
    p = Path(path)
    kind, folder, data = detect(p)
    own_md = (folder / "report.md").is_file()
    if kind == "demo":
        return _demo_page(folder), folder, True
    assert data is not None
    if kind == "seeds":
        return _seeds_page(folder, data), folder, False
    if kind == "probe":
        return _probe_page(folder, data, own_md), folder, own_md
    if kind == "experiment":
        return _experiment_page(folder, data), folder, own_md
    if kind == "run":
        return _run_page(folder, data, p.name), folder, False
    return _result_page(data, p.name), folder, False


def render(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.md`` and ``report.html`` for ``path``; returns the Markdown path.

    A folder whose own ``report.md`` is the report's source (the demo, an experiment, a probe run)
    keeps it: only ``report.html`` is written beside it (``out`` writes a combined Markdown instead).
    """
    page, folder, keep_md = build_page(path)
    md_path = Path(out) if out else folder / "report.md"
    html_path = md_path.with_suffix(".html")
    from alignlab.core.config import check_out_file

    for target in (md_path, html_path):
        check_out_file(target)
    page.write(None if keep_md and out is None else md_path, html_path)
    return md_path


def html_path_of(md_path: Path) -> Path:
    return md_path.with_suffix(".html")


# --- comparing runs -----------------------------------------------------------------------------------------


def _labels(paths: list[Path]) -> list[str]:
    """Short distinct names: the folder name, with parents added until they differ."""
    parts = [p.resolve().parts for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(x[-depth:]) for x in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _flat_metrics(kind: str, data: dict[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return {}
    if kind == "seeds":
        return {
            k: s["mean"]
            for k, s in data.get("metrics", {}).items()
            if isinstance(s, dict) and is_number(s.get("mean"))
        }
    return {k: v for k, v in (data.get("metrics") or {}).items() if is_number(v)}


def compare(
    paths: list[str | os.PathLike],
    out: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
) -> Path:
    """Several runs side by side: metrics table, overlaid curves; optionally the metrics as CSV.

    Writes ``out`` (default ``compare/report.md``) and the HTML page beside it; returns the Markdown path.
    """
    entries, names = _entries(paths)
    labels = [e[0] for e in entries]
    table = {label: m for label, _, _, _, _, m in entries}
    page = Page("Comparison: " + " vs ".join(labels))
    page.table(
        ["run", "kind", "task", "model", "data", "seed(s)"],
        [
            [
                label,
                kind,
                str((data or {}).get("task", "—")),
                str((data or {}).get("model", "—")),
                str((data or {}).get("data", "—")),
                str((data or {}).get("seeds", (data or {}).get("seed", "—"))),
            ]
            for label, _, kind, _, data, _ in entries
        ],
    )
    page.heading("Metrics")
    page.table(
        ["metric", *labels], [[n, *(fmt_metric(n, table[label].get(n)) for label in labels)] for n in names]
    )
    if any(kind == "seeds" for _, _, kind, _, _, _ in entries):
        page.para("For multi-seed folders the value is the mean over seeds.", note=True)
    bar_keys = [n for n in names if "R@" in n] or [n for n in names if n.endswith("_pct")] or names[:8]
    page.figure(
        plots.compare_bars(table, bar_keys, "compare_metrics.png", "the metrics of every run side by side")
    )
    series = {}
    for label, _, kind, folder, _, _ in entries:
        if kind == "run":
            series[label] = read_log(folder)
        elif kind == "seeds":
            for s in _seed_dirs(folder):
                series[f"{label}/{s.name}"] = read_log(s)
    series = {k: v for k, v in series.items() if v["loss"] or v["dev"]}
    if series:
        page.heading("Curves")
        page.figure(
            plots.curves(
                series, "compare_curves.png", "training loss (interval mean) and dev metric, overlaid"
            )
        )
    if len(entries) == 2 and all(kind in ("run", "seeds") for _, _, kind, _, _, _ in entries):
        _paired_verdict(page, entries[0][1], entries[1][1])
    md_path = Path(out) if out else Path("compare") / "report.md"
    page.write(md_path, md_path.with_suffix(".html"))
    if csv_path is not None:
        write_csv(Path(csv_path), entries, names)
    return md_path


def _entries(paths: list[str | os.PathLike]) -> tuple[list[tuple], list[str]]:
    """(label, path, kind, folder, data, flat metrics) of every path, and the union of metric names."""
    ps = [Path(p) for p in paths]
    entries = []
    for label, p in zip(_labels(ps), ps):
        kind, folder, data = detect(p)
        if kind == "demo":
            raise DataError(
                "a demo folder holds many runs and cannot be compared or exported as one",
                where=str(p),
                fix="give its run folders, e.g. demo-out/dcd/dcd demo-out/dcd/no-kd",
            )
        entries.append((label, p, kind, folder, data, _flat_metrics(kind, data)))
    names = order_names([k for e in entries for k in e[5]])
    if not names:
        raise DataError(
            "no numeric metrics to report",
            where=", ".join(map(str, ps)),
            fix="give run, repro or probe folders or results.json files",
        )
    return entries, names


def metrics_csv(paths: list[str | os.PathLike], csv_path: str | os.PathLike) -> Path:
    """Every run's metrics as CSV: one row per path, identity columns, then metrics in natural order."""
    entries, names = _entries(paths)
    write_csv(Path(csv_path), entries, names)
    return Path(csv_path)


def _paired_verdict(page: Page, a: Path, b: Path) -> None:
    """Two retrieval runs or repro folders on the same test set: ``repro compare``'s analysis
    (paired by seed)."""
    from alignlab.retrieval.repro import compare as repro_compare

    try:
        c = repro_compare(a, b)
    except (DataError, KeyError, ValueError):
        return  # not two retrieval runs with per-query ranks on one test set: no paired test to run
    page.heading("Verdict (paired by seed)")
    page.para(f"B = {b.name} vs A = {a.name} on {c['queries']} queries: {c['verdict']}")


def write_csv(path: Path, entries: list[tuple], names: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "path", "kind", "task", "model", "data", "seed", *names])
    for label, p, kind, _, data, metrics in entries:
        d = data or {}
        seed = d.get("seed", " ".join(str(s) for s in d.get("seeds", [])))
        # Full precision in the CSV (a spreadsheet rounds for display), but never a float repr artefact.
        w.writerow(
            [
                label,
                str(p),
                kind,
                d.get("task", ""),
                d.get("model", ""),
                d.get("data", ""),
                seed,
                *(_csv_num(metrics.get(n)) for n in names),
            ]
        )
    write_text(path, buf.getvalue())


def _csv_num(v: Any) -> str:
    if v is None:
        return ""
    x = float(v)
    if x != x:  # NaN
        return ""
    return str(int(x)) if x.is_integer() else f"{x:.6g}"
