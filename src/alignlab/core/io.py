"""Atomic writes and line-numbered reading.

A result file is either absent or complete: every writer here writes a temporary file in the target's
folder, flushes it to disk and renames it over the target (``os.replace`` is atomic on POSIX and
Windows). A crash at any moment leaves the old file or none, never half of a new one.

Readers report the file and line of the first bad record as a :class:`~alignlab.core.errors.DataError`.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"
>>> write_json(p, {"a": 1})
>>> read_json(p)
{'a': 1}
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from alignlab.core.errors import DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    For writers that want a file name (``torch.save``, ``PIL.Image.save``, ``safetensors``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert NumPy / torch scalars and arrays, paths, sets and dataclasses into plain JSON values."""
    import dataclasses

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and obj != obj:  # NaN is not valid JSON
        return None
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON atomically (NumPy/torch values converted, NaN written as null)."""
    write_text(path, dumps_json(obj, indent) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write one JSON object per line atomically; returns the number of records."""
    buf = io.StringIO()
    n = 0
    for rec in records:
        buf.write(dumps_json(rec, indent=None))
        buf.write("\n")
        n += 1
    write_text(path, buf.getvalue())
    return n


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file is a :class:`DataError` naming line and column."""
    path = Path(path)
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", where=f"{path}:{e.lineno}:{e.colno}",
                        fix="fix the file so that it is valid JSON") from None


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError("file not found", where=str(path), fix="check the path")
    if path.is_dir():
        raise DataError("expected a file, found a folder", where=str(path), fix="give the path of a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError("the file is not valid UTF-8", where=f"{path}:{line}",
                        fix="re-encode the file as UTF-8") from None


def read_lines(path: str | os.PathLike, *, allow_empty: bool = False) -> list[str]:
    """Read a one-item-per-line text file (UTF-8), without line endings.

    An empty line (after stripping) is an error naming its line unless ``allow_empty``. A final newline
    does not make an empty last line.
    """
    path = Path(path)
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln.rstrip("\r") for ln in lines]
    if not allow_empty:
        for i, ln in enumerate(lines, 1):
            if not ln.strip():
                raise DataError("empty line", where=f"{path}:{i}", fix="remove the line or give its text")
    return lines


def _raise(error: DataError) -> None:
    raise error


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = (),
               on_error: Callable[[DataError], None] | None = None) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts, each with its line number under ``"_line"``.

    Blank lines are skipped. A line that is not a JSON object, or lacks one of ``required``, raises a
    :class:`DataError` naming ``path:line``; with ``on_error`` the error is passed to it instead and the
    line is skipped (so a checker can list every bad line in one pass).
    """
    path = Path(path)
    report = on_error or _raise
    out = []
    for line_no, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            report(DataError(f"invalid JSON: {e.msg}", where=f"{path}:{line_no}",
                             fix="each line must be one JSON object"))
            continue
        if not isinstance(rec, dict):
            report(DataError(f"expected a JSON object, found {type(rec).__name__}", where=f"{path}:{line_no}",
                             fix="each line must be one JSON object"))
            continue
        missing = [k for k in required if k not in rec]
        if missing:
            report(DataError(f"record lacks field(s) {', '.join(map(repr, missing))}", where=f"{path}:{line_no}",
                             fix=f"every record needs {', '.join(map(repr, required))}"))
            continue
        rec["_line"] = line_no
        out.append(rec)
    return out


def read_csv(path: str | os.PathLike, required: Sequence[str] = (),
             on_error: Callable[[DataError], None] | None = None) -> list[dict[str, Any]]:
    """Read a CSV file with a header into dicts (with ``"_line"``), checking the ``required`` columns.

    A row with too many or too few fields raises a :class:`DataError` naming ``path:line``; with
    ``on_error`` the error is passed to it instead and the row is skipped. A header that lacks a
    required column always raises.
    """
    path = Path(path)
    report = on_error or _raise
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [k for k in required if k not in header]
    if missing:
        raise DataError(f"CSV header lacks column(s) {', '.join(map(repr, missing))} (found {header})",
                        where=f"{path}:1", fix=f"the header must name {', '.join(map(repr, required))}")
    out = []
    for rec in reader:
        line_no = reader.line_num
        if None in rec:
            report(DataError("row has more fields than the header", where=f"{path}:{line_no}",
                             fix="quote fields that contain commas"))
            continue
        if any(rec.get(k) is None for k in required):
            report(DataError("row has fewer fields than the header", where=f"{path}:{line_no}",
                             fix="give a value for every column"))
            continue
        rec["_line"] = line_no
        out.append(rec)
    return out
