"""Classic knowledge-distillation losses and the measures used to compare soft labels.

Notation: ``z`` are logits ``[B, K]``, ``T`` a temperature, ``p^T(z) = softmax(z / T)``, ``y`` integer
labels. Every loss returns a dict of named ``*_loss`` terms (the trainer sums them); per-sample terms
are computed with ``reduction="none"`` first and averaged last, so per-sample weights could be applied.

Losses
    * :func:`ce_loss` — ``CE(z, y) = -log p^1(z)[y]``.
    * :func:`label_smoothing_loss` — cross-entropy against ``(1 - eps) * onehot(y) + eps / K``.
    * :func:`kd_kl` — the per-sample KD term ``T² · KL(p^T(z_t) ‖ p^T(z_s))`` (Hinton et al., 2015);
      the ``T²`` keeps its gradient scale independent of ``T``.
    * :func:`vanilla_kd_loss` — ``(1 - α) · CE(z_s, y) + α · T² · KL(p^T(z_t) ‖ p^T(z_s))`` with the
      teacher detached.
    * :func:`dml_loss` — deep mutual learning (Zhang et al., 2018): two networks trained together, each
      on ``(1 - α) · CE + α · T² · KL(p^T(other, detached) ‖ p^T(self))``.
    * :class:`LearnedTemperature` — a trainable scalar ``τ = exp(θ)`` that rescales logits ``z / τ``.

Measures
    * :func:`entropy` — ``H(p^T(z)) = -Σ_k p_k log p_k`` in nats, per sample.
    * :func:`max_prob` — ``max_k p^T(z)_k`` per sample.
    * :func:`expected_calibration_error` — ECE with equal-width confidence bins:
      ``Σ_b (n_b / n) · |acc_b - conf_b|``.

>>> import torch
>>> zs, zt = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])
>>> float(kd_kl(zs, zt, T=4.0)[0])  # identical distributions: no divergence
0.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _check_logits(*logits: torch.Tensor) -> None:
    shape = logits[0].shape
    for z in logits:
        if z.ndim != 2:
            raise ValueError(f"logits must be [batch, classes], got shape {tuple(z.shape)}")
        if z.shape != shape:
            raise ValueError(f"logit shapes differ: {tuple(shape)} vs {tuple(z.shape)}")


def _check_temperature(T: float | torch.Tensor) -> None:
    if not torch.is_tensor(T) and not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")


def soft_targets(logits: torch.Tensor, T: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``softmax(z / T)`` over the last dimension."""
    _check_temperature(T)
    return F.softmax(logits / T, dim=-1)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy ``-log softmax(z)[y]``."""
    return F.cross_entropy(logits, labels, reduction=reduction)


def label_smoothing_loss(
    logits: torch.Tensor, labels: torch.Tensor, eps: float = 0.1, *, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy against the smoothed target ``q = (1 - eps) · onehot(y) + eps / K``.

    Equals ``(1 - eps) · CE(z, y) + eps · mean_k(-log p_k)``; with ``eps = 0`` it is plain CE.
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1), got {eps}")
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, labels.view(-1, 1)).squeeze(1)
    uniform = -logp.mean(dim=-1)
    per = (1.0 - eps) * nll + eps * uniform
    return per.mean() if reduction == "mean" else per


def kd_kl(
    student_logits: torch.Tensor, target_logits: torch.Tensor, T: float | torch.Tensor = 4.0
) -> torch.Tensor:
    """Per-sample ``T² · KL(p^T(target) ‖ p^T(student))``, shape ``[B]``.

    ``KL(q ‖ p) = Σ_k q_k (log q_k - log p_k)``; terms with ``q_k = 0`` contribute 0. Gradients flow into
    both arguments; detach the one that is a fixed target.
    """
    _check_logits(student_logits, target_logits)
    _check_temperature(T)
    log_p = F.log_softmax(student_logits / T, dim=-1)
    log_q = F.log_softmax(target_logits / T, dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    return kl * (T * T)


def vanilla_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    T: float = 4.0,
    alpha: float = 0.9,
) -> dict[str, torch.Tensor]:
    """Hinton KD: ``{"ce_loss": (1-α)·CE(z_s, y), "kd_loss": α·T²·KL(p^T(z_t) ‖ p^T(z_s))}``.

    The teacher's logits are detached: the teacher is a fixed target.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return {
        "ce_loss": (1.0 - alpha) * ce_loss(student_logits, labels),
        "kd_loss": alpha * kd_kl(student_logits, teacher_logits.detach(), T).mean(),
    }


def dml_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    *,
    T: float = 1.0,
    alpha: float = 0.5,
    names: tuple[str, str] = ("a", "b"),
) -> dict[str, torch.Tensor]:
    """Deep mutual learning: each network learns from the labels and from the other's (detached) output.

    Returns ``{"ce_<a>_loss", "kl_<a>_loss", "ce_<b>_loss", "kl_<b>_loss"}`` where network ``a``'s terms
    are ``(1-α)·CE(z_a, y)`` and ``α·T²·KL(p^T(z_b) ‖ p^T(z_a))`` (and symmetrically for ``b``). Because
    each target is detached, summing all four terms and calling backward once trains both networks.
    """
    a, b = names
    return {
        f"ce_{a}_loss": (1.0 - alpha) * ce_loss(logits_a, labels),
        f"kl_{a}_loss": alpha * kd_kl(logits_a, logits_b.detach(), T).mean(),
        f"ce_{b}_loss": (1.0 - alpha) * ce_loss(logits_b, labels),
        f"kl_{b}_loss": alpha * kd_kl(logits_b, logits_a.detach(), T).mean(),
    }


class LearnedTemperature(nn.Module):
    """``z ↦ z / τ`` with a trainable ``τ = exp(θ)`` (positive by construction), initialised at ``init``.

    One parameter: the cheapest possible "adapter" of a teacher's sharpness — the baseline that tells
    whether a per-example adapter does more than rescale the logits globally.
    """

    def __init__(self, init: float = 1.0):
        super().__init__()
        if not init > 0:
            raise ValueError(f"initial temperature must be > 0, got {init}")
        self.log_tau = nn.Parameter(torch.tensor(math.log(init)))

    @property
    def tau(self) -> float:
        return float(self.log_tau.detach().exp())

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.log_tau.exp()


def entropy(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Per-sample entropy (nats) of ``softmax(z / T)``; 0 for a one-hot, ``log K`` for uniform."""
    _check_temperature(T)
    logp = F.log_softmax(logits / T, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def max_prob(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Per-sample largest probability of ``softmax(z / T)``."""
    return soft_targets(logits, T).max(dim=-1).values


def expected_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, T: float = 1.0
) -> float:
    """ECE of the predictions ``argmax z`` with confidence ``max softmax(z / T)``.

    Confidences are put into ``n_bins`` equal-width bins ``(b/n_bins, (b+1)/n_bins]`` (the first bin also
    holds 0); ``ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|`` over non-empty bins. 0 is
    perfectly calibrated; an over-confident model has confidence above its accuracy.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if len(labels) == 0:
        raise ValueError("ECE needs at least one example")
    with torch.no_grad():
        probs = soft_targets(logits.double(), T)
        conf, pred = probs.max(dim=-1)
        correct = (pred == labels).double()
        # Bin b holds confidences in (b/n, (b+1)/n]; ceil(c * n) - 1 gives that index (0 goes to bin 0).
        idx = (torch.ceil(conf * n_bins) - 1).clamp(0, n_bins - 1).long()
        ece = 0.0
        n = len(labels)
        for b in range(n_bins):
            mask = idx == b
            m = int(mask.sum())
            if m:
                ece += m / n * abs(float(correct[mask].mean()) - float(conf[mask].mean()))
    return float(ece)
