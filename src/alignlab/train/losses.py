"""Contrastive losses for image–text matching. Each returns a dict of named ``*_loss`` terms.

Inputs are L2-normalised embeddings ``image_emb [B, D]`` and ``text_emb [B, D]`` where row ``k`` of each
is a matching pair and every other row is a negative. ``s = image_emb @ text_emb.T`` (cosine).

* :class:`InfoNCELoss` — symmetric InfoNCE (CLIP):
  ``L = ½ [CE(τ⁻¹ s, diag) + CE(τ⁻¹ sᵀ, diag)]`` with a learnable ``τ⁻¹ = exp(logit_scale)`` passed in by the
  model (so it is trained with the model's parameters).
* :class:`VSEHingeLoss` — VSE++ hinge with margin ``α``:
  sum form ``L_k = Σ_{c'≠k} [α − s_kk + s_kc']₊ + Σ_{i'≠k} [α − s_kk + s_i'k]₊``;
  max-violation form (``max_violation=True``) keeps only the hardest negative of each sum.

Per-sample ``weights [B]`` multiply the per-pair losses *before* the reduction.

**True captions are not negatives.** ``positives [B, B]`` (bool, optional) marks every caption of the
batch that is true of an image: ``positives[i, j]`` = caption ``j`` describes image ``i`` (on
ShapesWorld the truth evaluator decides, e.g. "there is a circle" for two images with circles). Each
pair ``k`` still has its own caption as the target, but a true off-diagonal caption is removed from the
softmax of image ``i`` (its logit is −∞) and, symmetrically, image ``i`` from the softmax of caption
``j`` (masked InfoNCE); the hinge losses give such pairs no cost. With no shared truth (``positives``
the identity, or None) every loss equals its plain form. Under ``gather=True`` every rank passes the
mask of the *global* batch ``[N, N]`` (the same on every rank); each rank takes its own rows and
columns, so the masked DDP loss is again the single-process one.

Cross-rank negatives (``gather=True``, under DDP; the identity in one process): every rank's embeddings
are gathered (:func:`alignlab.train.distributed.all_gather_with_grad`, gradients flow back to the rank
that computed them), so each of the ``N = Σ_r n_r`` pairs of the global batch has the ``N − 1`` others
as negatives, exactly as one process with batch ``N``. With ``local_loss=True`` (default) a rank computes
only its own ``n_r`` rows and columns of the ``N × N`` score matrix (``n_r × N`` each way; positives at
the rank's label offset) and returns ``(W/N) Σ_{k∈r} w_k ℓ_k``; DDP's average over ranks then gives the
single-process loss ``(1/N) Σ_k w_k ℓ_k`` and its gradient. With ``local_loss=False`` every rank computes
the whole ``N × N`` matrix (``W`` times the work, the same result).

>>> import torch, torch.nn.functional as F
>>> img = F.normalize(torch.randn(4, 8), dim=-1); txt = F.normalize(torch.randn(4, 8), dim=-1)
>>> sorted(InfoNCELoss()(img, txt, torch.tensor(10.0)))
['contrastive_loss']
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import ConfigError
from alignlab.core.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")


def _reduce(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ConfigError(
            f"weights of shape {tuple(weights.shape)} do not match {tuple(per_sample.shape)} samples"
        )
    return (per_sample * weights).sum() / per_sample.numel()


def _reduce_share(
    per_local: torch.Tensor, weights: torch.Tensor | None, n_total: int, world: int
) -> torch.Tensor:
    """This rank's share of the global mean: ``(W/N) Σ_{k local} w_k ℓ_k`` (see the module docstring)."""
    if weights is not None and weights.shape != per_local.shape:
        raise ConfigError(
            f"weights of shape {tuple(weights.shape)} do not match {tuple(per_local.shape)} samples"
        )
    total = per_local.sum() if weights is None else (per_local * weights).sum()
    return total * (world / n_total)


def _gather_pairs(
    image_emb: torch.Tensor, text_emb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Gathered image and text embeddings of the global batch, this rank's offset in it, and the world
    size."""
    from alignlab.train.distributed import all_gather_with_grad, world_size

    all_img, offset = all_gather_with_grad(image_emb)
    all_txt, _ = all_gather_with_grad(text_emb)
    return all_img, all_txt, offset, world_size()


def _distributed() -> bool:
    from alignlab.train.distributed import is_distributed

    return is_distributed()


def _check(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ConfigError(
            f"image and text embeddings must both be [B, D], got {tuple(image_emb.shape)} and "
            f"{tuple(text_emb.shape)}"
        )


def _positives(positives: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    """The ``[n, n]`` bool mask of true pairs without its diagonal (None: no shared truth)."""
    if positives is None:
        return None
    positives = torch.as_tensor(positives, device=device)
    if positives.shape != (n, n):
        raise ConfigError(
            f"positives of shape {tuple(positives.shape)} do not match a batch of {n} pairs",
            fix="give the [N, N] mask of the (global) batch: positives[i, j] = caption j is true of image i",
        )
    off = positives.bool() & ~torch.eye(n, dtype=torch.bool, device=device)
    return off if bool(off.any()) else None


def exclude_true(logits: torch.Tensor, true_negatives: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with every true non-target pair set to −∞ (out of the softmax); unchanged for None."""
    if true_negatives is None:
        return logits
    return logits.masked_fill(true_negatives, float("-inf"))


@LOSSES.register("infonce")
class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE over in-batch negatives with a (learnable) inverse temperature.

    ``gather=True``: under DDP the negatives come from every rank's batch (see the module docstring).
    """

    uses_logit_scale = True  # DDP must know whether the model's temperature receives a gradient

    def __init__(self, gather: bool = False, local_loss: bool = True):
        super().__init__()
        self.gather = gather
        self.local_loss = local_loss

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor | float,
        weights: torch.Tensor | None = None,
        positives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        _check(image_emb, text_emb)
        if self.gather and _distributed():
            return {"contrastive_loss": self._gathered(image_emb, text_emb, logit_scale, weights, positives)}
        logits = logit_scale * image_emb @ text_emb.T
        mask = _positives(positives, len(logits), logits.device)
        target = torch.arange(len(logits), device=logits.device)
        per = 0.5 * (
            F.cross_entropy(exclude_true(logits, mask), target, reduction="none")
            + F.cross_entropy(
                exclude_true(logits.T, None if mask is None else mask.T), target, reduction="none"
            )
        )
        return {"contrastive_loss": _reduce(per, weights)}

    def _gathered(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor | float,
        weights: torch.Tensor | None,
        positives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        from alignlab.train.distributed import all_gather_nograd

        all_img, all_txt, offset, world = _gather_pairs(image_emb, text_emb)
        n = len(all_img)
        mask = _positives(positives, n, image_emb.device)  # the global batch's mask, the same on every rank
        if self.local_loss:
            # Rows of the N x N matrix for the local images, and its columns for the local captions.
            b = len(image_emb)
            target = torch.arange(b, device=image_emb.device) + offset
            rows = None if mask is None else mask[offset : offset + b]  # local image vs every caption
            cols = None if mask is None else mask[:, offset : offset + b].T  # local caption vs every image
            per = 0.5 * (
                F.cross_entropy(
                    exclude_true(logit_scale * image_emb @ all_txt.T, rows), target, reduction="none"
                )
                + F.cross_entropy(
                    exclude_true(logit_scale * text_emb @ all_img.T, cols), target, reduction="none"
                )
            )
            return _reduce_share(per, weights, n, world)
        logits = logit_scale * all_img @ all_txt.T
        target = torch.arange(n, device=logits.device)
        per = 0.5 * (
            F.cross_entropy(exclude_true(logits, mask), target, reduction="none")
            + F.cross_entropy(
                exclude_true(logits.T, None if mask is None else mask.T), target, reduction="none"
            )
        )
        return _reduce(per, None if weights is None else all_gather_nograd(weights))


class VSEHingeLoss(nn.Module):
    """VSE++ triplet hinge on cosine similarities, summed over negatives or on the hardest one."""

    uses_logit_scale = False  # the model's temperature gets no gradient (DDP: an unused parameter)

    def __init__(
        self, margin: float = 0.2, max_violation: bool = False, gather: bool = False, local_loss: bool = True
    ):
        super().__init__()
        self.margin = margin
        self.max_violation = max_violation
        self.gather = gather  # under DDP: negatives from every rank's batch (see the module docstring)
        self.local_loss = local_loss

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        weights: torch.Tensor | None = None,
        positives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        _check(image_emb, text_emb)
        if self.gather and _distributed():
            return {"hinge_loss": self._gathered(image_emb, text_emb, weights, positives)}
        s = image_emb @ text_emb.T
        pos = s.diag()
        eye = torch.eye(len(s), dtype=torch.bool, device=s.device)
        mask = _positives(positives, len(s), s.device)
        if mask is not None:  # a true caption (image) is no negative: it costs nothing
            eye = eye | mask
        cost_t = (self.margin - pos[:, None] + s).clamp(min=0).masked_fill(eye, 0)  # image k vs caption c'
        cost_i = (self.margin - pos[None, :] + s).clamp(min=0).masked_fill(eye, 0)  # caption k vs image i'
        if self.max_violation:
            per = cost_t.max(dim=1).values + cost_i.max(dim=0).values
        else:
            per = cost_t.sum(dim=1) + cost_i.sum(dim=0)
        return {"hinge_loss": _reduce(per, weights)}

    def _per_sample(self, cost_t: torch.Tensor, cost_i: torch.Tensor) -> torch.Tensor:
        if self.max_violation:
            return cost_t.max(dim=1).values + cost_i.max(dim=0).values
        return cost_t.sum(dim=1) + cost_i.sum(dim=0)

    def _gathered(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        weights: torch.Tensor | None,
        positives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        from alignlab.train.distributed import all_gather_nograd

        all_img, all_txt, offset, world = _gather_pairs(image_emb, text_emb)
        n, b = len(all_img), len(image_emb)
        mask = _positives(positives, n, image_emb.device)  # the global batch's mask, the same on every rank
        if not self.local_loss:
            s = all_img @ all_txt.T
            pos = s.diag()
            eye = torch.eye(n, dtype=torch.bool, device=s.device)
            if mask is not None:
                eye = eye | mask
            cost_t = (self.margin - pos[:, None] + s).clamp(min=0).masked_fill(eye, 0)
            cost_i = (self.margin - pos[None, :] + s).clamp(min=0).masked_fill(eye, 0)
            all_w = None if weights is None else all_gather_nograd(weights)
            return _reduce(self._per_sample(cost_t, cost_i), all_w)
        k = torch.arange(b, device=image_emb.device)
        rows = image_emb @ all_txt.T  # [b, N]: local image k vs every caption; its positive at offset + k
        cols = all_img @ text_emb.T  # [N, b]: every image vs local caption k
        own_r = torch.zeros_like(rows, dtype=torch.bool)
        own_r[k, offset + k] = True
        own_c = own_r.T
        if mask is not None:
            own_r = own_r | mask[offset : offset + b]
            own_c = own_c | mask[:, offset : offset + b]
        cost_t = (self.margin - rows[k, offset + k][:, None] + rows).clamp(min=0).masked_fill(own_r, 0)
        cost_i = (self.margin - cols[offset + k, k][None, :] + cols).clamp(min=0).masked_fill(own_c, 0)
        return _reduce_share(self._per_sample(cost_t, cost_i), weights, n, world)


@LOSSES.register("vse-sum")
class VSESumLoss(VSEHingeLoss):
    def __init__(self, margin: float = 0.2, gather: bool = False, local_loss: bool = True):
        super().__init__(margin, max_violation=False, gather=gather, local_loss=local_loss)


@LOSSES.register("vse-max")
class VSEMaxLoss(VSEHingeLoss):
    def __init__(self, margin: float = 0.2, gather: bool = False, local_loss: bool = True):
        super().__init__(margin, max_violation=True, gather=gather, local_loss=local_loss)


def build_loss(name: str, margin: float = 0.2, gather: bool = False, local_loss: bool = True) -> nn.Module:
    """A registered loss by name; ``gather``/``local_loss``: cross-rank negatives under DDP (module
    docstring)."""
    cls = LOSSES.get(name)
    kwargs = (
        {"gather": True, "local_loss": local_loss} if gather else {}
    )  # other registered losses: no kwargs
    return cls(margin=margin, **kwargs) if name.startswith("vse") else cls(**kwargs)
