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
        raise ConfigError(f"weights of shape {tuple(weights.shape)} do not match {tuple(per_sample.shape)} samples")
    return (per_sample * weights).sum() / per_sample.numel()


def _check(image_emb: torch.Tensor, text_emb: torch.Tensor) -> None:
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ConfigError(f"image and text embeddings must both be [B, D], got {tuple(image_emb.shape)} and "
                          f"{tuple(text_emb.shape)}")


@LOSSES.register("infonce")
class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE over in-batch negatives with a (learnable) inverse temperature."""

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _check(image_emb, text_emb)
        logits = logit_scale * image_emb @ text_emb.T
        target = torch.arange(len(logits), device=logits.device)
        per = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                     + F.cross_entropy(logits.T, target, reduction="none"))
        return {"contrastive_loss": _reduce(per, weights)}


class VSEHingeLoss(nn.Module):
    """VSE++ triplet hinge on cosine similarities, summed over negatives or on the hardest one."""

    def __init__(self, margin: float = 0.2, max_violation: bool = False):
        super().__init__()
        self.margin = margin
        self.max_violation = max_violation

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float | None = None,
                weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _check(image_emb, text_emb)
        s = image_emb @ text_emb.T
        pos = s.diag()
        eye = torch.eye(len(s), dtype=torch.bool, device=s.device)
        cost_t = (self.margin - pos[:, None] + s).clamp(min=0).masked_fill(eye, 0)  # image k vs caption c'
        cost_i = (self.margin - pos[None, :] + s).clamp(min=0).masked_fill(eye, 0)  # caption k vs image i'
        if self.max_violation:
            per = cost_t.max(dim=1).values + cost_i.max(dim=0).values
        else:
            per = cost_t.sum(dim=1) + cost_i.sum(dim=0)
        return {"hinge_loss": _reduce(per, weights)}


@LOSSES.register("vse-sum")
class VSESumLoss(VSEHingeLoss):
    def __init__(self, margin: float = 0.2):
        super().__init__(margin, max_violation=False)


@LOSSES.register("vse-max")
class VSEMaxLoss(VSEHingeLoss):
    def __init__(self, margin: float = 0.2):
        super().__init__(margin, max_violation=True)


def build_loss(name: str, margin: float = 0.2) -> nn.Module:
    cls = LOSSES.get(name)
    return cls(margin=margin) if name.startswith("vse") else cls()
