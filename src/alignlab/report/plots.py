"""The report's plots (matplotlib, Agg backend), each returned as PNG bytes in a :class:`Figure`."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from alignlab.report.fmt import clip_ci, is_number, order_names
from alignlab.report.page import Figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, name: str, caption: str) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return Figure(buf.getvalue(), name, caption)


def _dev_key(dev: Mapping[str, list[float]]) -> str | None:
    if "rsum" in dev:
        return "rsum"
    return next(iter(dev), None)


def curves(series: Mapping[str, Mapping[str, Any]], name: str, caption: str) -> Figure | None:
    """Training loss and one dev metric over optimizer steps, one line per run (overlaid).

    ``series[label]`` holds ``loss_steps``, ``loss``, ``dev_steps`` and ``dev`` (metric -> values) as read
    by :func:`alignlab.report.render.read_log`.
    """
    if not any(s["loss"] or s["dev"] for s in series.values()):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    interval = all(s.get("interval_mean") for s in series.values() if s["loss"])
    for label, s in series.items():
        if s["loss"]:
            axes[0].plot(s["loss_steps"], s["loss"], marker="." if len(s["loss"]) < 30 else None, label=label)
    axes[0].set(
        xlabel="optimizer step",
        ylabel="training loss",
        title="training loss (mean of each logging interval)" if interval else "training loss (logged steps)",
    )
    # The dev metric most runs share (a teacher may log other metrics than its students).
    keys = [_dev_key(s["dev"]) for s in series.values() if s["dev"]]
    key = max(dict.fromkeys(keys), key=keys.count) if keys else None
    if key:
        for label, s in series.items():
            if key in s["dev"]:
                axes[1].plot(s["dev_steps"], s["dev"][key], marker="o", label=label)
        axes[1].set(xlabel="optimizer step", ylabel=key, title=f"dev {key}")
    else:
        axes[1].axis("off")
    if len(series) > 1:
        for ax in axes:
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, name, caption)


def final_metrics(
    metrics: Mapping[str, Any],
    chance: Mapping[str, float] | None,
    ceiling: Mapping[str, float] | None,
    name: str,
    caption: str,
) -> Figure | None:
    """The final R@K as bars with the chance level and the ceiling (a perfect ranker) marked on each."""
    keys = [k for k in order_names(metrics) if "R@" in k and is_number(metrics[k])]
    if not keys:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(keys) + 1.5), 3.4))
    xs = range(len(keys))
    ax.bar(xs, [metrics[k] for k in keys], color="#4C72B0", label="model")
    for marks, style, label in (
        (chance, "--", "chance (random ranking)"),
        (ceiling, ":", "ceiling (perfect ranker)"),
    ):
        if marks:
            pts = [(i, marks[k]) for i, k in enumerate(keys) if is_number(marks.get(k))]
            for j, (i, v) in enumerate(pts):
                ax.hlines(
                    v,
                    i - 0.4,
                    i + 0.4,
                    colors="k" if style == ":" else "#C44E52",
                    linestyles=style,
                    label=label if j == 0 else None,
                )
    ax.set_xticks(list(xs), keys, rotation=30, ha="right")
    ax.set(ylabel="%", ylim=(0, 105), title="final test R@K")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _png(fig, name, caption)


def seeds(
    per_seed: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Mapping[str, float]],
    name: str,
    caption: str,
) -> Figure | None:
    """Every seed's value as a point, the mean with its 95% CI as a bar, for R@K (left) and RSUM (right)."""
    keys = [k for k in order_names(summary) if "R@" in k]
    has_rsum = "rsum" in summary
    if not keys and not has_rsum:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [max(1, len(keys)), 1.2]})
    for ax, group in ((axes[0], keys), (axes[1], ["rsum"] if has_rsum else [])):
        if not group:
            ax.axis("off")
            continue
        for i, k in enumerate(group):
            vals = [r[k] for r in per_seed.values() if is_number(r.get(k))]
            ax.scatter(
                [i + 0.12] * len(vals),
                vals,
                s=18,
                color="#4C72B0",
                zorder=3,
                label="a seed" if i == 0 else None,
            )
            s = summary[k]
            lo, hi = clip_ci(k, s["ci_low"], s["ci_high"])
            if not (math.isnan(lo) or math.isnan(hi)):
                ax.errorbar(
                    [i - 0.12],
                    [s["mean"]],
                    yerr=[[s["mean"] - lo], [hi - s["mean"]]],
                    fmt="D",
                    color="#C44E52",
                    capsize=4,
                    label="mean, 95% CI" if i == 0 else None,
                )
            else:
                ax.scatter(
                    [i - 0.12], [s["mean"]], marker="D", color="#C44E52", label="mean" if i == 0 else None
                )
        ax.set_xticks(
            range(len(group)),
            group,
            rotation=30 if len(group) > 1 else 0,
            ha="right" if len(group) > 1 else "center",
        )
        ax.set_xlim(-0.6, len(group) - 0.4)
        ax.legend(fontsize=8)
    axes[0].set(ylabel="%", title=f"test R@K over {len(per_seed)} seeds")
    if has_rsum:
        axes[1].set(title="RSUM")
    fig.tight_layout()
    return _png(fig, name, caption)


def probe_tasks(rows: Sequence[Mapping[str, Any]], name: str, caption: str) -> Figure | None:
    """Per probe task: model accuracy with its CI, the best blind baseline and chance."""
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows) + 1), 3.6))
    xs = list(range(len(rows)))
    acc = [r["acc"] for r in rows]
    err = [
        [max(0.0, r["acc"] - r["ci_low"]) for r in rows],
        [max(0.0, r["ci_high"] - r["acc"]) for r in rows],
    ]
    ax.bar(
        [x - 0.2 for x in xs], acc, width=0.4, yerr=err, capsize=4, color="#4C72B0", label="model (95% CI)"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r.get("blind") or 0 for r in rows],
        width=0.4,
        color="#BBBBBB",
        label="best blind baseline",
    )
    for i, r in enumerate(rows):
        ax.hlines(
            r["chance"],
            i - 0.45,
            i + 0.45,
            colors="#C44E52",
            linestyles="--",
            label="chance" if i == 0 else None,
        )
    ax.set_xticks(xs, [r["task"] for r in rows], rotation=15, ha="right")
    ax.set(ylabel="accuracy %", ylim=(0, 105), title="probe accuracy per task")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return _png(fig, name, caption)


def compare_bars(
    table: Mapping[str, Mapping[str, Any]], keys: Sequence[str], name: str, caption: str
) -> Figure | None:
    """Grouped bars: each metric in ``keys`` for every run in ``table`` (label -> metrics)."""
    keys = [k for k in keys if any(is_number(m.get(k)) for m in table.values())]
    if not keys:
        return None
    plt = _plt()
    n = len(table)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(keys) * max(1, n / 2) + 2), 3.6))
    for j, (label, m) in enumerate(table.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(keys))]
        ax.bar(xs, [m.get(k) if is_number(m.get(k)) else 0 for k in keys], width=width, label=label)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set(title="metrics side by side")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, name, caption)
