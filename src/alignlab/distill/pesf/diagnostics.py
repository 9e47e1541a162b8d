"""Sharpness and calibration diagnostics of teacher, adapted teacher and student, and their plot.

For logits ``z`` and the distillation temperature ``T`` we report, averaged over a split:

* ``H = −Σ_k p_k log p_k`` with ``p = softmax(z / T)`` — the **entropy** (nats; ``log K`` is uniform);
* ``max_k p_k`` — the **max probability** (1 is a one-hot);
* ``ECE`` of ``softmax(z)`` (at ``T = 1``: how the model's own confidence matches its accuracy).

The **sharpness gap** is ``H(student) − H(target)``: positive when the soft labels the student learns
from are sharper than what the student itself produces. PESF-KD's premise is that a large gap (an
over-confident teacher, a small student) hampers transfer, and that an adapter can narrow it.

>>> import torch
>>> stats = sharpness_stats(torch.tensor([[10.0, 0.0], [0.0, 10.0]]), torch.tensor([0, 1]), T=1.0)
>>> round(stats["maxp"], 4), stats["acc"]
(1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignlab.distill.kd import entropy, expected_calibration_error, max_prob

ROLES = ("teacher", "adapted", "student")


def sharpness_stats(
    logits: torch.Tensor, labels: torch.Tensor, T: float, n_bins: int = 15
) -> dict[str, float]:
    """``{"acc", "entropy", "maxp", "ece"}`` of one model's logits on one split (entropy/maxp at ``T``)."""
    with torch.no_grad():
        return {
            "acc": float((logits.argmax(dim=-1) == labels).double().mean()),
            "entropy": float(entropy(logits, T).double().mean()),
            "maxp": float(max_prob(logits, T).double().mean()),
            "ece": expected_calibration_error(logits, labels, n_bins=n_bins),
        }


def diagnostics(
    logits: dict[str, torch.Tensor], labels: torch.Tensor, T: float, n_bins: int = 15, target: str = "adapted"
) -> dict[str, float]:
    """Flat dict ``{"<role>_<stat>": value}`` for roles present in ``logits``, plus the gaps.

    ``gap`` is ``H(student) − H(target)`` (the soft labels the student actually learns from) and
    ``gap_teacher`` is ``H(student) − H(teacher)``.
    """
    out: dict[str, float] = {}
    for role, z in logits.items():
        for k, v in sharpness_stats(z, labels, T, n_bins).items():
            out[f"{role}_{k}"] = v
    if "student" in logits:
        if target in logits:
            out["gap"] = out["student_entropy"] - out[f"{target}_entropy"]
        if "teacher" in logits:
            out["gap_teacher"] = out["student_entropy"] - out["teacher_entropy"]
    return out


def plot_diagnostics(
    curve: Sequence[dict[str, Any]], path: str | Path, *, title: str = "", T: float = 4.0
) -> Path:
    """Entropy at ``T``, max probability at ``T`` and ECE per epoch for each role, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignlab.core.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [int(r["epoch"]) for r in curve]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    panels = (
        ("entropy", f"entropy of softmax(z/{T:g}) [nats]"),
        ("maxp", f"max prob of softmax(z/{T:g})"),
        ("ece", "ECE of softmax(z)"),
        ("acc", "accuracy (dev)"),
    )
    styles = {"teacher": ("tab:red", "-"), "adapted": ("tab:orange", "--"), "student": ("tab:blue", "-")}
    for ax, (stat, label) in zip(axes, panels):
        for role in ROLES:
            key = f"{role}_{stat}"
            if curve and key in curve[0]:
                colour, ls = styles[role]
                ax.plot(epochs, [r[key] for r in curve], color=colour, linestyle=ls, marker=".", label=role)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
