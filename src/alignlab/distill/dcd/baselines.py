"""Distillation baselines under the DCD API: in-batch relation KD and feature MSE.

Both give a *per-sample* term (``[B]``) that the trainer weights and reduces like DCD's terms.

* :func:`relation_kd_terms` — the student's and the teacher's in-batch similarity distributions
  should agree: with ``S`` (student) and ``T`` (teacher) the ``[B, B]`` scores of the batch's images
  against the batch's positive captions,
  ``ρ_i = ½ τ² [KL(softmax(T_i·/τ) ‖ softmax(S_i·/τ)) + KL(softmax(T_·i/τ) ‖ softmax(S_·i/τ))]``
  (row ``i``: image ``i`` ranking the captions; column ``i``: caption ``i`` ranking the images).
* :class:`FeatureMSE` — the student's pooled image and text features, mapped by a learned linear
  projection to the teacher's width, should match the teacher's (FitNets-style hints):
  ``φ_i = ½ [mean((P_v f^s_v(i) − f^t_v(i))²) + mean((P_l f^s_l(i) − f^t_l(i))²)]``.

(The third and fourth baselines — no teacher with random negatives, and static KD — are settings of the
DCD trainer itself: ``negatives="random", kd="none"`` and ``kd="score", weighting=False``.)

>>> import torch
>>> s = torch.randn(4, 4); float(relation_kd_terms(s, s).abs().max()) < 1e-6
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _kl_rows(teacher: torch.Tensor, student: torch.Tensor, tau: float) -> torch.Tensor:
    log_q = F.log_softmax(student / tau, dim=-1)
    log_p = F.log_softmax(teacher.detach().to(student.dtype) / tau, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def relation_kd_terms(student: torch.Tensor, teacher: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Per-sample relation KD ``[B]`` between ``[B, B]`` student and teacher in-batch score grids."""
    if student.shape != teacher.shape or student.ndim != 2 or student.shape[0] != student.shape[1]:
        raise ValueError(
            f"relation KD needs square [B, B] grids, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    return 0.5 * tau**2 * (_kl_rows(teacher, student, tau) + _kl_rows(teacher.T, student.T, tau))


def relation_kd_rows(
    s_rows: torch.Tensor, t_rows: torch.Tensor, s_cols: torch.Tensor, t_cols: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """:func:`relation_kd_terms` of some samples ``i`` of a larger batch (a DDP rank's shard): ``[n]``.

    ``s_rows``/``t_rows`` ``[n, N]``: row ``i`` of the student's/teacher's grid (image ``i`` against all
    ``N`` captions); ``s_cols``/``t_cols`` ``[n, N]``: column ``i`` as a row (caption ``i`` against all
    images). With ``n = N`` and the whole grids this is ``relation_kd_terms(S, T)``.
    """
    return 0.5 * tau**2 * (_kl_rows(t_rows, s_rows, tau) + _kl_rows(t_cols, s_cols, tau))


class FeatureMSE(nn.Module):
    """Learned projections from the student's feature width to the teacher's, and the per-sample MSE."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.image = nn.Linear(student_width, teacher_width, bias=False)
        self.text = nn.Linear(student_width, teacher_width, bias=False)

    def forward(
        self, s_img: torch.Tensor, s_txt: torch.Tensor, t_img: torch.Tensor, t_txt: torch.Tensor
    ) -> torch.Tensor:
        img = ((self.image(s_img) - t_img.detach().to(s_img.dtype)) ** 2).mean(-1)
        txt = ((self.text(s_txt) - t_txt.detach().to(s_txt.dtype)) ** 2).mean(-1)
        return 0.5 * (img + txt)
