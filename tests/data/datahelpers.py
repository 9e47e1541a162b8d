"""Helpers for the data tests (a module of its own: importing conftest.py by name is fragile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, colour=(200, 30, 30), size=(12, 10)) -> Path:
    """A small solid image file (``size`` is width, height) with one marked pixel, so images differ.

    The format follows the suffix (``.jpg`` gives a JPEG, as real data sets have).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = colour
    arr[0, 0] = (255 - colour[0], 7, 7)
    Image.fromarray(arr).save(path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: to show that a failing call wrote nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
