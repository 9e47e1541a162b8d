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
import contextvars
import csv
import io
import json
import os
import re
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file 0600; the finished file gets the mode a plain open() would give it, so
        # others can read results on a shared machine when the umask lets them.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


TEMP_SUFFIX = ".tmp"
# The name atomic_path gives its temporary file: ".<target name>.<mkstemp's 8 random characters>.tmp".
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def current_umask() -> int:
    """The process umask (read from /proc where it exists: setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``folder``; returns them.

    Call it when a run starts or resumes, while no other process writes into the folder: a crash between
    creating the temporary file and renaming it leaves ``.<name>.XXXXXXXX.tmp`` behind (as large as a
    checkpoint), and nothing else ever removes it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(f"*{TEMP_SUFFIX}") if recursive else folder.glob(f"*{TEMP_SUFFIX}")
    removed = []
    for p in sorted(found):
        if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


OUTSIDE_ROOT_FIX = (
    "give a path relative to the data root without '..', or pass --allow-outside-root if the "
    "file is meant to be read from there"
)


# The user's permission for data files to name paths outside their data root (`--allow-outside-root`),
# for commands whose loaders sit deep inside a run (train, repro run, distill dcd): a permission, not a
# setting of the run, so it stays out of the config and its hash.
_OUTSIDE_ALLOWED = contextvars.ContextVar("alignlab_outside_root_allowed", default=False)


@contextlib.contextmanager
def outside_root_allowed(allowed: bool = True) -> Iterator[None]:
    """Within the block, :func:`resolve_inside` accepts paths outside the data root."""
    token = _OUTSIDE_ALLOWED.set(bool(allowed))
    try:
        yield
    finally:
        _OUTSIDE_ALLOWED.reset(token)


def resolve_inside(
    root: str | os.PathLike, ref: str | os.PathLike, *, where: str, allow_outside: bool = False
) -> Path:
    """``root / ref`` for a path ``ref`` read from a data file, refused if it leaves ``root``.

    Both are resolved first (symlinks followed, ``..`` collapsed), then the result must lie inside the
    resolved root: an absolute ``ref``, a ``../`` escape, or a link out of the root is a
    :class:`DataError` naming ``where`` (the file and line of the reference), unless ``allow_outside``.
    """
    root_path = Path(root)
    path = root_path / ref  # an absolute ref replaces the root here
    if allow_outside or _OUTSIDE_ALLOWED.get():
        return path
    resolved_root = root_path.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(resolved_root):
        kind = "an absolute path" if Path(ref).is_absolute() else "a path"
        raise DataError(
            f"{kind} {str(ref)!r} leaves the data root {str(resolved_root)!r}",
            where=where,
            fix=OUTSIDE_ROOT_FIX,
        )
    return path


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
        raise DataError(
            f"invalid JSON: {e.msg}",
            where=f"{path}:{e.lineno}:{e.colno}",
            fix="fix the file so that it is valid JSON",
        ) from None


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
        raise DataError(
            "the file is not valid UTF-8", where=f"{path}:{line}", fix="re-encode the file as UTF-8"
        ) from None


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


def read_jsonl(
    path: str | os.PathLike, required: Sequence[str] = (), on_error: Callable[[DataError], None] | None = None
) -> list[dict[str, Any]]:
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
            report(
                DataError(
                    f"invalid JSON: {e.msg}",
                    where=f"{path}:{line_no}",
                    fix="each line must be one JSON object",
                )
            )
            continue
        if not isinstance(rec, dict):
            report(
                DataError(
                    f"expected a JSON object, found {type(rec).__name__}",
                    where=f"{path}:{line_no}",
                    fix="each line must be one JSON object",
                )
            )
            continue
        missing = [k for k in required if k not in rec]
        if missing:
            report(
                DataError(
                    f"record lacks field(s) {', '.join(map(repr, missing))}",
                    where=f"{path}:{line_no}",
                    fix=f"every record needs {', '.join(map(repr, required))}",
                )
            )
            continue
        rec["_line"] = line_no
        out.append(rec)
    return out


def read_csv(
    path: str | os.PathLike, required: Sequence[str] = (), on_error: Callable[[DataError], None] | None = None
) -> list[dict[str, Any]]:
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
        raise DataError(
            f"CSV header lacks column(s) {', '.join(map(repr, missing))} (found {header})",
            where=f"{path}:1",
            fix=f"the header must name {', '.join(map(repr, required))}",
        )
    out = []
    rows = iter(reader)
    while True:
        try:
            rec = next(rows)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a field over csv.field_size_limit(), a NUL byte: the rest is unreadable
            raise DataError(
                f"cannot read the CSV: {e}",
                where=f"{path}:{reader.line_num}",
                fix="check the quoting of that row (an unclosed quote swallows the rest of the "
                "file), or shorten the field",
            ) from None
        line_no = reader.line_num
        if None in rec:
            report(
                DataError(
                    "row has more fields than the header",
                    where=f"{path}:{line_no}",
                    fix="quote fields that contain commas",
                )
            )
            continue
        if any(rec.get(k) is None for k in required):
            report(
                DataError(
                    "row has fewer fields than the header",
                    where=f"{path}:{line_no}",
                    fix="give a value for every column",
                )
            )
            continue
        rec["_line"] = line_no
        out.append(rec)
    return out
