"""The DCD loss: a ground-truth term and a score-distillation term, each weighted per sample by difficulty.

For a batch of ``B`` images, each with its positive caption first and ``k`` mined negatives after it,
the student's scores ``s_i ∈ R^{1+k}`` and the teacher's scores ``t_i ∈ R^{1+k}`` (same order):

* self-learning term ``ℓ_i = CE(s_i, 0) = −log softmax(s_i)_0`` (plus any extra per-sample
  ground-truth term the student adds, e.g. caption→image over the batch);
* distillation term ``d_i = (1/(1+k)) Σ_j (s_ij/T − t_ij/T)²`` (score MSE at temperature ``T``;
  ``center=True`` subtracts each row's mean from ``s_i`` and ``t_i`` first, see :func:`kd_terms`);
* difficulty ``w_i = H(p_i) / Σ_j H(p_j)`` with ``p_i = softmax(t_i)`` and ``H`` the entropy: a
  sample on which the teacher hesitates is hard;
* distillation weights ``r_i = softmax_i((1 − w_i)²)`` (over the batch);
* total ``L = α Σ_i r_i d_i + (1 − α) Σ_i w_i ℓ_i`` (DCD: ``α = 0.2``, ``T = 1``).

The weights multiply the *unreduced* per-sample terms before the sum. Both ``w`` and ``r`` sum to 1,
so with ``weighting=False`` (``w_i = r_i = 1/B``) the terms are plain means: that is static KD.

``mode="released"`` reproduces two defects of the authors' released code, for the ablation:

1. the distillation term is reduced to a scalar ``d = mean_{i,j}(…)²`` *before* the weights are
   applied, so ``Σ_i r_i d = d`` and the weighting does nothing;
2. the teacher's scores are sorted (descending) while the student's are not, so ``t`` and ``s`` are
   misaligned whenever the teacher does not score the positive first.

``shuffle_weights=True`` permutes ``w`` and ``r`` across the batch (a control that keeps the weights'
distribution but breaks their link to difficulty).

Under DDP (``shard=Shard(...)``) a rank holds rows ``[lo, hi)`` of a global batch of ``N``. The weights
are normalised over the *global* batch: ``w`` and ``r`` (and the shuffle's permutation) are computed
from the global teacher scores, identically on every rank, then cut to the rank's rows; the rank
returns ``W · α Σ_{i∈shard} r_i d_i`` and ``W · (1 − α) Σ_{i∈shard} w_i ℓ_i``. DDP averages the ranks'
gradients, so the update is that of the one-process loss over the global batch, and the mean over
ranks of the returned values is its value. (Released mode: ``d`` is the global mean of the per-row
terms, so a rank contributes ``W · α (Σ_i r_i) (1/N) Σ_{i∈shard} d_i``.)

>>> import torch
>>> loss = DCDLoss(DCDLossConfig())
>>> s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3]])
>>> t = torch.tensor([[3.0, 0.0, -2.0], [1.0, 1.0, 1.0]])
>>> sorted(loss(s, t))
['kd_loss', 'self_loss']
>>> w, r = loss.weights(t); bool(w[1] > w[0])  # the teacher is unsure about sample 1: it is harder
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ConfigError

MODES = ("correct", "released")


@dataclass
class DCDLossConfig:
    alpha: float = 0.2  # share of the distillation term (0: no distillation)
    temperature: float = 1.0  # T of the score MSE
    weighting: bool = True  # dynamic per-sample weights (False: plain means, i.e. static KD)
    mode: str = "correct"  # correct | released (reproduces the released code's two defects)
    shuffle_weights: bool = False  # control: permute the weights across the batch
    center: bool = False  # subtract each row's mean from s and t before the MSE (see kd_terms)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


@dataclass(frozen=True)
class Shard:
    """This rank's rows ``[lo, hi)`` of a global batch of ``n`` samples split over ``world`` ranks (DDP).

    ``teacher`` holds the *global* batch's teacher scores ``[n, 1 + k]`` (None without a teacher): the
    per-sample weights are normalised over them, so every rank applies the weights one process would.
    """

    lo: int
    hi: int
    n: int
    world: int
    teacher: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.lo < self.hi <= self.n or self.world < 1:
            raise ValueError(f"bad shard [{self.lo}, {self.hi}) of {self.n} over {self.world} ranks")
        if self.teacher is not None and len(self.teacher) != self.n:
            raise ValueError(
                f"the shard's global teacher scores have {len(self.teacher)} rows, the batch {self.n}"
            )


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """``H(softmax(z))`` in nats, per row: ``[B, n] -> [B]``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def difficulty_weights(teacher: torch.Tensor) -> torch.Tensor:
    """``w_i = H(softmax(t_i)) / Σ_j H(softmax(t_j))``; uniform when every entropy is 0."""
    h = entropy(teacher.detach())
    total = h.sum()
    if not torch.isfinite(total) or total <= 0:
        return torch.full_like(h, 1.0 / len(h))
    return h / total


def kd_weights(w: torch.Tensor) -> torch.Tensor:
    """``r_i = softmax_i((1 − w_i)²)``."""
    return torch.softmax((1.0 - w) ** 2, dim=0)


def self_terms(student: torch.Tensor) -> torch.Tensor:
    """Per-sample ground-truth loss ``CE(s_i, 0)`` (the positive is column 0): ``[B, 1+k] -> [B]``."""
    target = torch.zeros(len(student), dtype=torch.long, device=student.device)
    return F.cross_entropy(student, target, reduction="none")


def kd_terms(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, center: bool = False
) -> torch.Tensor:
    """Per-sample score MSE ``mean_j (s_ij/T − t_ij/T)²``: ``[B, 1+k] -> [B]``.

    With ``center=True`` each row of ``s`` and ``t`` first has its mean subtracted: only score *gaps*
    are matched. A dual student's scores (``scale · cos``) have no per-row offset with which to follow the
    level of a cross encoder's logits, and a shift of a row changes no ranking.
    """
    t = teacher.detach().to(student.dtype)
    s = student
    if center:
        s = s - s.mean(-1, keepdim=True)
        t = t - t.mean(-1, keepdim=True)
    return ((s / temperature - t / temperature) ** 2).mean(-1)


class DCDLoss(nn.Module):
    """``forward(student, teacher, extra_self=None, generator=None) -> {"self_loss", "kd_loss"}``.

    ``student`` and ``teacher`` are ``[B, 1+k]`` scores with the positive in column 0 (``teacher`` may be
    None when ``alpha == 0`` and ``weighting`` is off). ``extra_self`` ``[B]`` is added to the per-sample
    ground-truth loss before weighting. ``generator`` seeds the permutation of ``shuffle_weights``.
    ``shard`` (DDP): the ``B`` rows are rows ``[lo, hi)`` of a larger global batch; weights are taken
    over the global batch and the terms are this rank's share (see the module docstring).
    Each returned term already carries its factor (``α`` or ``1 − α``), so the total is their sum.
    After a call, ``self.last`` holds diagnostics (weight spread, positive-first rate of the teacher).
    """

    def __init__(self, cfg: DCDLossConfig | None = None):
        super().__init__()
        self.cfg = cfg or DCDLossConfig()
        self.last: dict[str, float] = {}

    def weights(
        self, teacher: torch.Tensor | None, batch: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(w, r)`` actually applied: difficulty weights, uniform ones, or shuffled ones."""
        if not self.cfg.weighting or teacher is None:
            if self.cfg.weighting:
                raise ConfigError(
                    "dynamic weights need teacher scores", fix="give a teacher or set weighting off"
                )
            n = batch if batch is not None else len(teacher)  # type: ignore[arg-type]
            u = torch.full((n,), 1.0 / n)
            return u, u.clone()
        w = difficulty_weights(teacher)
        r = kd_weights(w)
        if self.cfg.shuffle_weights:
            perm = torch.randperm(len(w), generator=generator)
            w, r = w[perm], r[perm]
        return w, r

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        extra_self: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if teacher is not None and teacher.shape != student.shape:
            raise ConfigError(
                f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} "
                "differ in shape"
            )
        if teacher is None and cfg.alpha > 0:
            raise ConfigError("alpha > 0 needs teacher scores to distil", fix="give a teacher or set alpha=0")
        if shard is not None:
            return self._shard_forward(student, teacher, extra_self, generator, shard)
        w, r = self.weights(teacher, batch=len(student), generator=generator)
        w, r = w.to(student.device, student.dtype), r.to(student.device, student.dtype)
        ell = self_terms(student)
        if extra_self is not None:
            ell = ell + extra_self
        out = {"self_loss": (1.0 - cfg.alpha) * (w * ell).sum()}
        if cfg.alpha > 0:
            assert teacher is not None
            if cfg.mode == "released":
                # Defect 2: the teacher's row is sorted on its own; the student's is not.
                t_used = torch.sort(teacher, dim=1, descending=True).values
                # Defect 1: reduced to one number before the per-sample weights: sum_i r_i * d == d.
                d = kd_terms(student, t_used, cfg.temperature, cfg.center).mean()
                kd = (r * d).sum()
            else:
                kd = (r * kd_terms(student, teacher, cfg.temperature, cfg.center)).sum()
            out["kd_loss"] = cfg.alpha * kd
        n = len(student)
        self.last = {
            "w_max_rel": float(w.max() * n),
            "w_min_rel": float(w.min() * n),
            "r_max_rel": float(r.max() * n),
            "r_min_rel": float(r.min() * n),
        }
        if teacher is not None:
            self.last["teacher_pos_first"] = float(
                (teacher[:, 0] >= teacher[:, 1:].max(1).values).float().mean()
            )
        return out

    def _shard_forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        extra_self: torch.Tensor | None,
        generator: torch.Generator | None,
        shard: Shard,
    ) -> dict[str, torch.Tensor]:
        """This rank's share of the global loss (module docstring); a separate path, so that one process
        computes exactly what it always did."""
        cfg = self.cfg
        if len(student) != shard.hi - shard.lo:
            raise ValueError(f"{len(student)} student rows for shard [{shard.lo}, {shard.hi})")
        if (teacher is None) != (shard.teacher is None):
            raise ValueError("the shard's teacher scores and the local ones must be given together")
        # The weights of the whole global batch, the same on every rank (the teacher's scores, no gradient).
        w_all, r_all = self.weights(shard.teacher, batch=shard.n, generator=generator)
        w_all = w_all.to(student.device, student.dtype)
        r_all = r_all.to(student.device, student.dtype)
        w, r = w_all[shard.lo : shard.hi], r_all[shard.lo : shard.hi]
        ell = self_terms(student)
        if extra_self is not None:
            ell = ell + extra_self
        out = {"self_loss": shard.world * (1.0 - cfg.alpha) * (w * ell).sum()}
        if cfg.alpha > 0:
            assert teacher is not None
            if cfg.mode == "released":
                t_used = torch.sort(teacher, dim=1, descending=True).values
                d_part = kd_terms(student, t_used, cfg.temperature, cfg.center).sum() / shard.n
                kd = r_all.sum() * d_part
            else:
                kd = (r * kd_terms(student, teacher, cfg.temperature, cfg.center)).sum()
            out["kd_loss"] = shard.world * cfg.alpha * kd
        n = shard.n
        self.last = {
            "w_max_rel": float(w_all.max() * n),
            "w_min_rel": float(w_all.min() * n),
            "r_max_rel": float(r_all.max() * n),
            "r_min_rel": float(r_all.min() * n),
        }
        if shard.teacher is not None:
            t = shard.teacher
            self.last["teacher_pos_first"] = float((t[:, 0] >= t[:, 1:].max(1).values).float().mean())
        return out
