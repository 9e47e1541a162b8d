"""Reading caption files: one caption per line, and aligned parallel files (English + Chinese).

Both readers are strict: a non-UTF-8 byte or an empty line is a :class:`DataError` naming the file and
line; two parallel files of different lengths are a :class:`DataError` naming the first line that has no
partner in the shorter file.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.en").write_text("a bat\\na mouse\\n"); _ = (d / "a.zh").write_text("一只蝙蝠\\n")
>>> read_parallel(d / "a.en", d / "a.zh")
Traceback (most recent call last):
...
alignlab.core.errors.DataError: parallel files are misaligned: a.en has 2 lines, a.zh has 1 (...a.zh:2); ...
"""

from __future__ import annotations

import os
from pathlib import Path

from alignlab.core.errors import DataError
from alignlab.core.io import read_lines


def read_captions(path: str | os.PathLike, limit: int | None = None) -> list[str]:
    """Captions of a one-per-line UTF-8 file (empty lines and bad bytes are errors naming the line)."""
    lines = read_lines(path)
    if not lines:
        raise DataError(
            "the caption file is empty", where=str(path), fix="give a file with one caption per line"
        )
    return lines[:limit] if limit is not None else lines


def read_parallel(
    src: str | os.PathLike, tgt: str | os.PathLike, limit: int | None = None
) -> tuple[list[str], list[str]]:
    """Aligned source and target lines of two parallel files (line i of one translates line i of the
    other)."""
    src, tgt = Path(src), Path(tgt)
    a, b = read_lines(src), read_lines(tgt)
    if len(a) != len(b):
        short, n = (tgt, len(b)) if len(b) < len(a) else (src, len(a))
        raise DataError(
            f"parallel files are misaligned: {src.name} has {len(a)} lines, {tgt.name} has {len(b)}",
            where=f"{short}:{n + 1}",
            fix="the files must have one line per sentence pair, in the same order; a missing or "
            "extra line shifts every pair after it",
        )
    if not a:
        raise DataError("the parallel files are empty", where=str(src), fix="give at least one sentence pair")
    if limit is not None:
        a, b = a[:limit], b[:limit]
    return a, b
