"""The PESF-KD teacher adapter: a bottleneck MLP on the frozen teacher's penultimate features.

Given teacher features ``h = f_T(x)`` (``[B, F]``) and teacher logits ``z_t = W h + b`` (``[B, K]``), the
adapter computes ``g(h) = U · relu(D · h + c) + e`` with ``D: F → r`` and ``U: r → K`` (``r`` is the
bottleneck) and returns the **adapted logits**

    ``z_a = z_t + g(h)``   (``mode="add"``)   or   ``z_a = z_t − g(h)``   (``mode="sub"``).

``U`` and ``e`` start at zero, so the adapted teacher starts out *identical* to the teacher and the
student's first steps are plain KD; training then moves the soft labels only as far as the adapter's
loss asks (see :mod:`alignlab.distill.pesf.trainer`). Because ``g`` sees ``h`` — from which ``z_t`` is a
linear function — it can rescale the logits per example, e.g. shrink a confident teacher's margins,
which a single temperature can only do for all examples at once.

>>> import torch
>>> a = LogitAdapter(feature_dim=16, n_classes=10, bottleneck=4)
>>> h, z = torch.randn(3, 16), torch.randn(3, 10)
>>> bool(torch.equal(a(h, z), z))  # zero-initialised: the adapted teacher starts as the teacher
True
"""

from __future__ import annotations

import torch
from torch import nn

from alignlab.core.errors import ConfigError, ModelError


class LogitAdapter(nn.Module):
    """``z_a = z_t ± U · relu(D · h + c) + e`` — see the module docstring."""

    def __init__(self, feature_dim: int, n_classes: int, bottleneck: int = 16, mode: str = "add"):
        super().__init__()
        if mode not in ("add", "sub"):
            raise ConfigError(f"adapter mode must be add or sub, got {mode!r}")
        if feature_dim < 1 or n_classes < 2 or bottleneck < 1:
            raise ConfigError("adapter needs feature_dim >= 1, n_classes >= 2 and bottleneck >= 1")
        self.feature_dim, self.n_classes, self.bottleneck, self.mode = (
            feature_dim,
            n_classes,
            bottleneck,
            mode,
        )
        self.down = nn.Linear(feature_dim, bottleneck)
        self.up = nn.Linear(bottleneck, n_classes)
        # Zero-initialised output: the adapted teacher starts equal to the teacher (why: the student's
        # first updates then follow the teacher, and the adapter only departs from it when its loss asks).
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def correction(self, features: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(features)))

    def forward(self, features: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ModelError(
                f"adapter expects teacher features [B, {self.feature_dim}], got {tuple(features.shape)}",
                fix="build the adapter with the teacher's feature_dim",
            )
        if teacher_logits.shape != (features.shape[0], self.n_classes):
            raise ModelError(
                f"adapter expects teacher logits [B, {self.n_classes}], got {tuple(teacher_logits.shape)}",
                fix="build the adapter with the teacher's class count",
            )
        g = self.correction(features)
        return teacher_logits + g if self.mode == "add" else teacher_logits - g
