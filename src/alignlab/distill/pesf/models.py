"""The two classifiers of the KD experiments: a wide CNN teacher and a tiny CNN student.

Both follow one small contract that the trainer relies on (and checks before training):

* ``forward(x) -> logits [B, n_classes]``;
* ``features(x) -> h [B, feature_dim]`` — the penultimate representation (after global pooling);
* ``head(h) -> logits`` — so ``forward(x) == head(features(x))``;
* attributes ``n_classes`` and ``feature_dim``.

The PESF adapter reads the teacher's ``features``; any model with this contract can be a teacher or a
student.

>>> import torch
>>> t = WideCNN(in_channels=1, n_classes=10, width=8)
>>> h = t.features(torch.zeros(2, 1, 8, 8))
>>> tuple(h.shape), tuple(t.head(h).shape)
((2, 16), (2, 10))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def _block(cin: int, cout: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class WideCNN(nn.Module):
    """Teacher: two stages of two 3×3 conv blocks (``width`` then ``2*width`` channels) with batch norm,
    a 2×2 max-pool between them, global average pooling and a linear head.

    With no regularisation and many epochs it fits its training set almost perfectly and becomes
    over-confident: its softmax puts nearly all mass on one class, even at a KD temperature of 4.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.n_classes = int(n_classes)
        self.feature_dim = 2 * int(width)
        self.body = nn.Sequential(
            *_block(in_channels, width, True),
            *_block(width, width, True),
            nn.MaxPool2d(2),
            *_block(width, 2 * width, True),
            *_block(2 * width, 2 * width, True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(self.feature_dim, self.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyCNN(nn.Module):
    """Student: two 3×3 conv blocks (``width`` and ``2*width`` channels, max-pool between), average pooling
    to a 2×2 grid (some layout survives, which an 8×8 digit needs) and a linear head — under a thousand
    parameters at the default width."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 4):
        super().__init__()
        self.n_classes = int(n_classes)
        self.feature_dim = 8 * int(width)
        self.body = nn.Sequential(
            *_block(in_channels, width, False),
            nn.MaxPool2d(2),
            *_block(width, 2 * width, False),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(self.feature_dim, self.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class ModelConfig:
    arch: str = "wide"  # wide | tiny
    width: int = 32  # channels of the first stage; the second stage has twice as many


ARCHS = {"wide": WideCNN, "tiny": TinyCNN}


def build_classifier(cfg: ModelConfig, in_channels: int, n_classes: int) -> nn.Module:
    from alignlab.core.errors import ConfigError

    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown classifier arch {cfg.arch!r}", fix=f"choose one of: {', '.join(ARCHS)}")
    if cfg.width < 1:
        raise ConfigError(f"width must be >= 1, got {cfg.width}")
    return ARCHS[cfg.arch](in_channels, n_classes, cfg.width)


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
