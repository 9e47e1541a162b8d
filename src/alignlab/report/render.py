"""Results JSON -> Markdown (and PNG plots): ``alignlab report PATH``.

Understands what alignlab writes:

* a run folder (``results.json`` + ``log.jsonl``): metrics table, best epoch, the training-loss and
  dev-metric curves as ``plots/curves.png``;
* a ``repro run`` folder (``aggregate.json``): mean ± sd, min–max and 95% CI per metric, and every seed's
  RSUM as ``plots/seeds.png``;
* any other ``results.json`` in the project's format: its identity keys and metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alignlab.core.errors import DataError
from alignlab.core.io import atomic_path, read_json, write_text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    return rows


def _save_fig(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _plot_run(run: Path, out_dir: Path) -> Path | None:
    log_path = run / "log.jsonl"
    if not log_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, dev_steps, dev = [], [], [], {}
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "dev" in rec:
            dev_steps.append(rec["step"])
            for k, v in rec["dev"].items():
                dev.setdefault(k, []).append(v)
        elif "loss" in rec:
            steps.append(rec["step"])
            losses.append(rec["loss"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(steps, losses)
    axes[0].set(xlabel="optimizer step", ylabel="training loss", title="loss")
    key = "rsum" if "rsum" in dev else (next(iter(dev)) if dev else None)
    if key:
        axes[1].plot(dev_steps, dev[key], marker="o")
        axes[1].set(xlabel="optimizer step", ylabel=key, title=f"dev {key}")
    else:
        axes[1].axis("off")
    out = out_dir / "plots" / "curves.png"
    _save_fig(fig, out)
    plt.close(fig)
    return out


def _plot_seeds(agg: dict[str, Any], out_dir: Path) -> Path | None:
    per_seed = agg.get("per_seed") or {}
    if not per_seed:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(per_seed)
    vals = [per_seed[s].get("rsum") for s in seeds]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.scatter(range(len(seeds)), vals)
    ax.set_xticks(range(len(seeds)), seeds)
    ax.set(xlabel="seed", ylabel="test RSUM", title="RSUM per seed")
    out = out_dir / "plots" / "seeds.png"
    _save_fig(fig, out)
    plt.close(fig)
    return out


def render(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write a Markdown report of ``path`` (a run folder, a repro folder or a results JSON); returns its path."""
    p = Path(path)
    if p.is_dir():
        folder = p
        if (p / "aggregate.json").is_file():
            source = p / "aggregate.json"
        elif (p / "results.json").is_file():
            source = p / "results.json"
        else:
            raise DataError("no results.json or aggregate.json here", where=str(p),
                            fix="give a run folder, a repro folder or a results JSON file")
    elif p.is_file():
        folder, source = p.parent, p
    else:
        raise DataError("not found", where=str(p), fix="check the path")
    data = read_json(source)
    out_path = Path(out) if out else folder / "report.md"
    lines: list[str] = []
    if source.name == "aggregate.json":
        lines += [f"# Seeds {data.get('seeds')}", "", "| metric | mean | sd | min | max | range | 95% CI |",
                  "|---|---|---|---|---|---|---|"]
        for m, s in data.get("metrics", {}).items():
            lines.append(f"| {m} | {s['mean']:.2f} | {s['sd']:.2f} | {s['min']:.2f} | {s['max']:.2f} | "
                         f"{s['range']:.2f} | [{s['ci_low']:.2f}, {s['ci_high']:.2f}] |")
        plot = _plot_seeds(data, out_path.parent)
    else:
        ident = ", ".join(f"{k}: {data[k]}" for k in ("task", "model", "data", "seed") if k in data)
        lines += [f"# {ident or source.name}", ""]
        if "best" in data and data["best"]:
            lines += [f"Best epoch {data['best'].get('epoch')} by dev {data['best'].get('metric')} "
                      f"({_fmt(data['best'].get('value'))}).", ""]
        lines += _metrics_table(data.get("metrics", {}))
        plot = _plot_run(folder, out_path.parent)
    if plot is not None:
        lines += ["", f"![plot]({plot.relative_to(out_path.parent)})"]
    manifest = data.get("manifest") or {}
    if manifest:
        lines += ["", "Provenance: " + ", ".join(f"{k} {manifest[k]}" for k in ("alignlab", "torch", "git", "device",
                                                                                  "wall_s") if manifest.get(k))]
    write_text(out_path, "\n".join(lines) + "\n")
    return out_path
