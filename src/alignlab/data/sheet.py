"""Contact sheets: sample images with their English captions and Chinese translations, as one PNG.

Chinese needs a CJK font. One is looked up in the usual places (Debian's ``fonts-wqy-microhei`` or
``fonts-noto-cjk``, which ``make`` installs when it can) or given with ``ALIGNLAB_CJK_FONT``; without
one the sheet shows the English only and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from alignlab.core.io import atomic_path

_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


@lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    env = os.environ.get("ALIGNLAB_CJK_FONT")
    if env and Path(env).is_file():
        return env
    for c in _CANDIDATES:
        if Path(c).is_file():
            return c
    if shutil.which("fc-match"):
        try:
            out = subprocess.run(
                ["fc-match", "-f", "%{file}", ":lang=zh"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and Path(out).is_file() and "DejaVu" not in out:
            return out
    return None


def _font(size: int) -> tuple[ImageFont.ImageFont, bool]:
    path = find_cjk_font()
    if path:
        return ImageFont.truetype(path, size), True
    try:
        return ImageFont.load_default(size=size), False
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default(), False


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy wrapping by words (English) or characters (Chinese) to fit ``width`` pixels."""
    units = text.split(" ") if " " in text else list(text)
    sep = " " if " " in text else ""
    lines, cur = [], ""
    for u in units:
        trial = f"{cur}{sep}{u}" if cur else u
        if draw.textlength(trial, font=font) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = u
    if cur:
        lines.append(cur)
    return lines


def contact_sheet(
    images: Sequence[Image.Image],
    texts: Sequence[Sequence[tuple[str, str]]],
    path: str | os.PathLike,
    columns: int = 4,
    scale: int = 3,
    text_width: int = 330,
    font_size: int = 13,
) -> bool:
    """Write a sheet: each cell an image (scaled ``scale``×) beside its (English, Chinese) caption pairs.

    Returns whether Chinese could be drawn (a CJK font was found).
    """
    font, has_cjk = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = font_size + 3
    cells = []
    for img, pairs in zip(images, texts):
        big = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        lines: list[tuple[str, tuple[int, int, int]]] = []
        for en, zh in pairs:
            lines += [(ln, (20, 20, 20)) for ln in _wrap(probe, en, font, text_width)]
            if zh and has_cjk:
                lines += [(ln, (30, 90, 170)) for ln in _wrap(probe, zh, font, text_width)]
        h = max(big.height, len(lines) * line_h) + 12
        cell = Image.new("RGB", (big.width + text_width + 24, h), (255, 255, 255))
        cell.paste(big, (6, 6))
        d = ImageDraw.Draw(cell)
        for k, (ln, colour) in enumerate(lines):
            d.text((big.width + 16, 6 + k * line_h), ln, fill=colour, font=font)
        cells.append(cell)
    if not cells:
        raise ValueError("contact_sheet needs at least one image")
    cw = max(c.width for c in cells)
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    heights = [max(c.height for c in r) for r in rows]
    note = (
        []
        if has_cjk
        else [
            "(no CJK font found: Chinese translations are in the report; "
            "install fonts-wqy-microhei or set ALIGNLAB_CJK_FONT)"
        ]
    )
    top = line_h * len(note) + (6 if note else 0)
    sheet = Image.new("RGB", (cw * min(columns, len(cells)), sum(heights) + top), (235, 235, 235))
    d = ImageDraw.Draw(sheet)
    for k, ln in enumerate(note):
        d.text((6, 3 + k * line_h), ln, fill=(150, 0, 0), font=font)
    y = top
    for r, h in zip(rows, heights):
        for j, c in enumerate(r):
            sheet.paste(c, (j * cw, y))
        y += h
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return has_cjk
