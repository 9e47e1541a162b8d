"""Images as tensors with Pillow and NumPy only (no torchvision).

Models receive images as ``uint8`` tensors ``[B, 3, H, W]`` (or lists of Pillow images) and do their
own resizing and normalisation (see :mod:`alignlab.models.base`); this module reads files and turns
Pillow images into such tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from alignlab.core.errors import DataError


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB; a missing or unreadable file is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("image not found", where=str(path), fix="check the image root and file name")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(
            f"cannot read image: {e}", where=str(path), fix="replace or remove the file"
        ) from None


def check_image(path: str | os.PathLike) -> str | None:
    """None if ``path`` is a readable image, else a short description of the problem."""
    path = Path(path)
    if not path.is_file():
        return "image not found"
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        return f"unreadable image ({e.__class__.__name__})"
    return None


def resize(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize to ``size`` (square if an int) with bicubic filtering; no-op when already that size."""
    wh = (size, size) if isinstance(size, int) else (size[1], size[0])
    if img.size == wh:
        return img
    return img.resize(wh, Image.BICUBIC)


def pil_to_uint8(img: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A Pillow image -> ``uint8`` tensor ``[3, H, W]`` (resized when ``size`` is given)."""
    if size is not None:
        img = resize(img, size)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def stack_images(
    images: Sequence[Image.Image] | np.ndarray | torch.Tensor, size: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """Images (list of Pillow images, ``uint8`` array ``[B,H,W,3]`` or tensor ``[B,3,H,W]``) -> ``uint8``
    ``[B,3,H,W]``.

    A list of images of different sizes needs ``size``.
    """
    if isinstance(images, torch.Tensor):
        t = images
        if t.ndim != 4 or t.shape[1] != 3:
            raise DataError(
                f"expected an image tensor [B, 3, H, W], got shape {tuple(t.shape)}",
                fix="pass images as uint8 [B, 3, H, W] or a list of Pillow images",
            )
    elif isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(
                f"expected an image array [B, H, W, 3], got shape {images.shape}",
                fix="pass images as uint8 [B, H, W, 3]",
            )
        t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    else:
        if len(images) == 0:
            return torch.zeros(
                0, 3, *(size if isinstance(size, tuple) else (size or 1, size or 1)), dtype=torch.uint8
            )
        tensors = [pil_to_uint8(im, size) for im in images]
        shapes = {tuple(x.shape) for x in tensors}
        if len(shapes) > 1:
            raise DataError(f"images have different sizes {sorted(shapes)}", fix="give a target size")
        return torch.stack(tensors)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(t.shape[-2:]) != hw:
            t = to_float(t)
            t = torch.nn.functional.interpolate(
                t, size=hw, mode="bilinear", antialias=True, align_corners=False
            )
            return (t * 255).round().clamp(0, 255).to(torch.uint8)
    return t if t.dtype == torch.uint8 else t.to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images -> float in [0, 1] (float input is returned as float32 unchanged)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
