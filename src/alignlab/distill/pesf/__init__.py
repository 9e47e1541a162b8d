"""PESF-KD: parameter-efficient, student-friendly knowledge distillation (Rao et al., IEEE TMM 2023).

A teacher that is much stronger than its student tends to be much *sharper* (over-confident): its soft
labels are nearly one-hot even at a KD temperature, and a tiny student cannot match them. PESF-KD keeps
the teacher frozen and trains only a small **adapter** on its penultimate features whose output is added
to the teacher's logits; the adapter is trained to stay correct (``CE(z_a, y)``) and to move towards the
student's own distribution (``KL`` to the detached student), and the student learns from the adapted
logits. This package holds

* :mod:`~alignlab.distill.pesf.adapter` — the bottleneck adapter;
* :mod:`~alignlab.distill.pesf.trainer` — every KD method (CE, label smoothing, KD, learned temperature,
  DML, PESF and the released-code ablations) as one :func:`alignlab.train.loop.fit` task, with freezing
  checks, bad-input checks and cost accounting;
* :mod:`~alignlab.distill.pesf.diagnostics` — sharpness (entropy, max probability at ``T``), gap, ECE,
  per-epoch plots; :mod:`~alignlab.distill.pesf.cost` — passes per step and training-step memory;
* :mod:`~alignlab.distill.pesf.data` / :mod:`~alignlab.distill.pesf.models` — digits and ShapesWorld
  classification, the wide CNN teacher and tiny CNN student;
* :mod:`~alignlab.distill.pesf.experiment` (``alignlab experiment pesf``), :mod:`~alignlab.distill.pesf.cli`
  (``alignlab distill pesf ...``) and the demo stage.

The classic losses live in :mod:`alignlab.distill.kd`.
"""

from alignlab.distill.pesf.adapter import LogitAdapter
from alignlab.distill.pesf.trainer import (
    METHODS,
    KDConfig,
    KDModel,
    check_setup,
    freeze,
    run_kd,
    train_teacher,
)

__all__ = [
    "LogitAdapter",
    "METHODS",
    "KDConfig",
    "KDModel",
    "check_setup",
    "freeze",
    "run_kd",
    "train_teacher",
]
